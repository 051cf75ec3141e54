"""``POST /v1/chat/completions`` (SPEC §6.8): the same generation as Responses, in the Chat shape.

Reasoning comes back as both ``reasoning`` and ``reasoning_content`` (on ``message`` and on streamed
``delta``); tool calls stream as ``delta.tool_calls[{index, id, type, function}]``, only the first fragment of
an index carrying ``id`` and ``name``; the stream ends with ``data: [DONE]``.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from gptoss.engine.sampling import SamplingParams
from gptoss.harmony.render import render_for_completion
from gptoss.server import harmony_bridge as hb
from gptoss.server.app import ServerContext
from gptoss.server.errors import APIError, bad_request, check_model
from gptoss.server.protocol import ChatRequest, new_id
from gptoss.server.sessions import ToolSession
from gptoss.server.streaming import DONE, sse_data, stream_from_thread, wait_for_thread
from gptoss.server.turn import ItemAdded, ItemDelta, ItemEvent, Turn, TurnRequest, TurnResult

router = APIRouter()
MAX_STOP_STRINGS = 4


def plan_chat(body: ChatRequest, ctx: ServerContext) -> tuple[TurnRequest, ToolSession]:
    if body.n not in (None, 1):
        raise bad_request("only n=1 is supported", param="n")
    effort = hb.resolve_effort(hb.effort_spellings(body.reasoning, body.reasoning_effort, body.chat_template_kwargs))
    functions = hb.parse_functions(body.tools, chat=True)
    choice = hb.parse_tool_choice(body.tool_choice, functions, chat=True)
    fmt, schema = hb.parse_format(body.response_format, "response_format", chat=True)
    rendered = [] if choice.mode == "none" else functions
    hb.parse_builtins(body.tools, ctx.sessions.available)  # an explicit built-in must be enabled
    convo, instructions = hb.chat_to_messages(body.messages)
    stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if len(stops) > MAX_STOP_STRINGS:
        raise bad_request(f"at most {MAX_STOP_STRINGS} stop strings", param="stop")
    check_model(body.model, ctx)
    constraint = hb.constraint_spec(schema, rendered, choice, () if choice.mode == "none" else ctx.sessions.available)
    # Chat has no built-in tool items: the server's built-ins run inside the turn (SPEC §6.8).
    session = ctx.sessions.checkout(() if choice.mode == "none" else ctx.sessions.available)
    try:
        messages = hb.header_messages(effort, instructions, rendered, fmt, session.system_options()) + convo
        prompt = render_for_completion(messages)
        prompt_len = len(prompt)
        params = SamplingParams(max_tokens=ctx.budget(prompt_len, body.max_completion_tokens or body.max_tokens),
                                temperature=1.0 if body.temperature is None else body.temperature,
                                top_p=1.0 if body.top_p is None else body.top_p, seed=body.seed)
    except BaseException:
        ctx.sessions.checkin(session, None)
        raise
    return TurnRequest(messages, params, tuple(f.name for f in rendered), constraint, stop_strings=tuple(stops),
                       max_tool_rounds=ctx.max_tool_rounds, builtins=session.tools,
                       container_id=session.container_id, prompt=prompt), session


def _finish_reason(result: TurnResult) -> str:
    if result.finish_reason == "tool_calls" or (result.status == "completed"
                                                and any(i.kind == "function_call" for i in result.items)):
        return "tool_calls"
    return "length" if result.finish_reason == "length" else "stop"


def _usage(result: TurnResult) -> dict[str, Any]:
    return {"prompt_tokens": result.input_tokens, "completion_tokens": result.output_tokens,
            "total_tokens": result.input_tokens + result.output_tokens,
            "prompt_tokens_details": {"cached_tokens": result.cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": result.reasoning_tokens}}


def _check_failed(result: TurnResult) -> None:
    if result.status == "failed" and result.error:
        code = result.error.get("code")
        status = 429 if code == "rate_limit_exceeded" else 500
        raise APIError(result.error.get("message", "generation failed"), status=status, code=code)


def completion_object(cid: str, model: str, created: int, result: TurnResult) -> dict[str, Any]:
    text = "".join(i.text for i in result.items if i.kind == "message")
    reasoning = "\n\n".join(i.text for i in result.items if i.kind == "reasoning") or None
    calls = [{"id": i.call_id, "type": "function", "function": {"name": i.name, "arguments": i.text}}
             for i in result.items if i.kind == "function_call"]
    has_message = any(i.kind == "message" for i in result.items)
    message: dict[str, Any] = {"role": "assistant", "content": text if has_message or not calls else None,
                               "refusal": None, "reasoning": reasoning, "reasoning_content": reasoning}
    if calls:
        message["tool_calls"] = calls
    annotations = [{"type": "url_citation", "url_citation": {k: a[k] for k in ("start_index", "end_index", "url",
                                                                               "title")}}
                   for i in result.items if i.kind == "message" for a in i.annotations]
    if annotations and sum(i.kind == "message" for i in result.items) == 1:  # offsets into that one text
        message["annotations"] = annotations
    return {"id": cid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": _finish_reason(result), "logprobs": None}],
            "usage": _usage(result), "system_fingerprint": None}


class ChunkEvents:
    """Item events -> ``chat.completion.chunk`` records."""

    def __init__(self, cid: str, model: str, created: int, include_usage: bool, emit) -> None:
        self.base = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                     "system_fingerprint": None}
        self.include_usage = include_usage
        self.emit = emit
        self.call_index: dict[str, int] = {}

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> None:
        record = {**self.base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        if self.include_usage:
            record["usage"] = None
        self.emit(sse_data(record))

    def __call__(self, ev: ItemEvent) -> None:
        item = ev.item
        if item.kind == "function_call":
            if isinstance(ev, ItemAdded):
                self.call_index[item.id] = len(self.call_index)
                self.chunk({"tool_calls": [{"index": self.call_index[item.id], "id": item.call_id, "type": "function",
                                            "function": {"name": item.name, "arguments": ""}}]})
            elif isinstance(ev, ItemDelta):
                self.chunk({"tool_calls": [{"index": self.call_index[item.id], "function": {"arguments": ev.delta}}]})
        elif isinstance(ev, ItemDelta):  # built-in calls run inside the server: not shown (SPEC §6.8)
            if item.kind == "reasoning":
                self.chunk({"reasoning": ev.delta, "reasoning_content": ev.delta})
            elif item.kind == "message":
                self.chunk({"content": ev.delta})

    def end(self, result: TurnResult) -> None:
        if result.status == "failed":
            err = result.error or {}
            self.emit(sse_data({"error": {"message": err.get("message", "generation failed"), "type": "server_error",
                                          "param": None, "code": err.get("code", "server_error")}}))
        else:
            self.chunk({}, _finish_reason(result))
        if self.include_usage:
            self.emit(sse_data({**self.base, "choices": [], "usage": _usage(result)}))
        self.emit(DONE)


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatRequest, request: Request):
    ctx: ServerContext = request.app.state.ctx
    turn, session = plan_chat(body, ctx)
    cid, model, created = new_id("chatcmpl-"), body.model or ctx.engine.model_id, int(time.time())
    try:
        ctx.admission.acquire()
    except APIError:
        ctx.sessions.checkin(session, None)
        raise
    cancel = threading.Event()

    def run(sink=None) -> TurnResult:
        try:
            return Turn(ctx.engine, turn, sink, cancel).run()
        finally:
            ctx.sessions.checkin(session, None)  # Chat conversations have no server-side continuation

    if not body.stream:
        result = await wait_for_thread(run, cancel, request, ctx.admission.release)
        _check_failed(result)
        return JSONResponse(completion_object(cid, model, created, result))
    include_usage = bool((body.stream_options or {}).get("include_usage"))

    def work(emit) -> None:
        events = ChunkEvents(cid, model, created, include_usage, emit)
        events.chunk({"role": "assistant", "content": ""})
        events.end(run(events))

    return StreamingResponse(stream_from_thread(work, cancel, ctx.admission.release), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
