"""Acceptance run for ``gptoss serve`` (issue 5) against a real model -- a script, not a pytest module.

    .venv/bin/python tests/server/acceptance_serve.py [--model PATH] [--json OUT] [--tries 50]

Starts ``gptoss serve`` (the bundled gpt-oss-tiny unless --model) on a free loopback port and checks, with the
official ``openai`` client: streaming through both APIs parses every event; a function-calling round trip
completes through both APIs (``tool_choice`` required, then ``auto`` with the tool output); a ``json_schema``
``strict`` request returns schema-valid JSON on every one of ``--tries`` tries (8 at a time). Exit 0 only
if everything held.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jsonschema
import openai

from gptoss.cli.bench_serve import _Server

SCHEMA = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40},
                                           "temperature_c": {"type": "integer", "minimum": -90, "maximum": 60},
                                           "conditions": {"type": "string", "enum": ["sunny", "cloudy", "rain"]}},
          "required": ["city", "temperature_c", "conditions"], "additionalProperties": False}
TOOL = {"type": "function", "name": "get_weather", "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                       "additionalProperties": False}, "strict": True}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--tries", type=int, default=50)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    ns = argparse.Namespace(model=args.model, api_key="acc", dtype=args.dtype, device="cpu", server_ops="auto",
                            max_batch=8, prefix_cache=256, server_threads=None)
    tmp = tempfile.TemporaryDirectory()
    server = _Server(ns, Path(tmp.name) / "db.sqlite3")
    out: dict = {}
    try:
        server.wait_ready()
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="acc", timeout=300, max_retries=0)
        out["model"] = client.models.list().data[0].id
        q = "What is the weather in Oslo?"

        events = list(client.responses.create(model="gpt-oss", input=q, stream=True, max_output_tokens=400))
        out["responses_stream"] = {"events": len(events), "last": events[-1].type,
                                   "sequence_ok": [e.sequence_number for e in events] == list(range(len(events))),
                                   "text": events[-1].response.output_text[:200]}
        chunks = list(client.chat.completions.create(model="gpt-oss", messages=[{"role": "user", "content": q}],
                                                     stream=True, max_tokens=400,
                                                     stream_options={"include_usage": True}))
        out["chat_stream"] = {"chunks": len(chunks), "finish": next(
            (c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason), None),
            "usage": chunks[-1].usage.model_dump() if chunks[-1].usage else None,
            "text": "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)[:200]}

        # function calling, Responses
        first = client.responses.create(model="gpt-oss", input=q, tools=[TOOL], tool_choice="required",
                                        max_output_tokens=400)
        call = next(i for i in first.output if i.type == "function_call")
        second = client.responses.create(model="gpt-oss", previous_response_id=first.id, tools=[TOOL],
                                         max_output_tokens=400, input=[{"type": "function_call_output",
                                                                        "call_id": call.call_id,
                                                                        "output": '{"temperature_c": 4}'}])
        out["responses_tools"] = {"call": call.arguments, "status": second.status,
                                  "answer": second.output_text[:200]}
        # function calling, Chat
        chat_tool = {"type": "function", "function": {k: v for k, v in TOOL.items() if k != "type"}}
        messages = [{"role": "user", "content": q}]
        c1 = client.chat.completions.create(model="gpt-oss", messages=messages, tools=[chat_tool],
                                            tool_choice="required", max_tokens=400)
        msg = c1.choices[0].message
        messages += [msg.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": msg.tool_calls[0].id, "content": '{"temperature_c": 4}'}]
        c2 = client.chat.completions.create(model="gpt-oss", messages=messages, tools=[chat_tool], max_tokens=400)
        out["chat_tools"] = {"finish_1": c1.choices[0].finish_reason, "call": msg.tool_calls[0].function.arguments,
                             "finish_2": c2.choices[0].finish_reason, "answer": (c2.choices[0].message.content
                                                                                 or "")[:200]}

        # strict JSON, N tries
        fmt = {"type": "json_schema", "name": "weather", "schema": SCHEMA, "strict": True}

        def one(k: int) -> bool:
            r = client.responses.create(model="gpt-oss", input=f"Weather report for city number {k}, as JSON.",
                                        text={"format": fmt}, max_output_tokens=600, store=False,
                                        extra_body={"seed": k})
            try:
                jsonschema.validate(json.loads(r.output_text), SCHEMA)
                return r.status == "completed"
            except (ValueError, jsonschema.ValidationError):
                return False

        t0 = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            ok = list(pool.map(one, range(args.tries)))
        out["json_schema"] = {"valid": sum(ok), "tries": args.tries, "seconds": round(time.perf_counter() - t0, 1)}
    finally:
        server.stop()
        tmp.cleanup()
    print(json.dumps(out, indent=2, ensure_ascii=False))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
    good = (out["responses_stream"]["sequence_ok"] and out["responses_tools"]["status"] == "completed"
            and out["chat_tools"]["finish_1"] == "tool_calls" and out["json_schema"]["valid"] == args.tries)
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
