"""``gptoss generate``: a prompt in, the answer out (harmony), or raw token ids with --tokens."""

from __future__ import annotations

import argparse
import json
import sys
import time

from rich.console import Console

from gptoss.cli.common import err_console, token_list
from gptoss.cli.conversation import (
    add_conversation_arguments,
    build_registry,
    builtin_options,
    citation_lines,
    close_registry,
    describe_result,
    header_messages,
    resolve_date,
)

EPILOG = """examples:
  gptoss generate --model /path/to/gpt-oss-20b "Why is the sky blue?"
  gptoss generate --model M --reasoning-effort high --show-reasoning "Prove that 17 is prime"
  echo "Summarise: ..." | gptoss generate --model M - --json
  gptoss generate --model M --tokens 200006,1428,200008 --max-tokens 8 --temperature 0
  gptoss generate --model M --browser local "What do my notes say about X?"   # cites indexed files
  gptoss generate --model M --python "What is 2**100 mod 97? Compute it."
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = EPILOG
    p.add_argument("prompt", nargs="?", help="the user message ('-' reads standard input)")
    add_conversation_arguments(p)
    p.add_argument("--tokens", type=token_list, metavar="IDS",
                   help="raw mode: comma-separated prompt token ids, no harmony; prints token ids")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens; 0 = off")
    p.add_argument("--stop", type=token_list, default=[], metavar="IDS",
                   help="raw mode: token ids that end generation (the stop token is printed)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (answer, reasoning, tool calls, token counts, timings)")


def run(args: argparse.Namespace) -> int:
    from gptoss.api import Model
    from gptoss.engine.sampling import SamplingParams

    if (args.prompt is None) == (args.tokens is None):
        raise ValueError("give either a prompt (text, or '-' for standard input) or --tokens IDS")
    opts = builtin_options(args)  # checked before the model loads
    if args.tokens is not None and opts.any:
        raise ValueError("--browser and --python need a harmony prompt; raw --tokens mode has no tools")
    params = SamplingParams(args.max_tokens, args.temperature, args.top_p, args.top_k, args.seed,
                            tuple(args.stop))
    t0 = time.perf_counter()
    model = Model.load(args.model, dtype=args.dtype, device=args.device)
    load_s = time.perf_counter() - t0
    if args.tokens is not None:
        return _run_tokens(model, args, params, load_s)
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    if not prompt.strip():
        raise ValueError("the prompt is empty")
    return _run_text(model, args, params, prompt, load_s)


def _run_tokens(model, args: argparse.Namespace, params, load_s: float) -> int:
    from gptoss.engine.generate import BatchGenerator

    gen = BatchGenerator(model.transformer, [args.tokens], params)
    t1 = time.perf_counter()
    gen.prefill()
    t2 = time.perf_counter()
    finish = None
    for event in gen:
        finish = event.finish_reason
        if not args.json:
            print(event.token, end=" ", flush=True)
    t3 = time.perf_counter()
    tokens = gen.generated[0]
    if args.json:
        print(json.dumps({"prompt_tokens": len(args.tokens), "tokens": tokens, "finish_reason": finish,
                          "load_s": round(load_s, 3), "prefill_s": round(t2 - t1, 3),
                          "decode_s": round(t3 - t2, 3),
                          "decode_tok_s": round(len(tokens) / max(t3 - t2, 1e-9), 2)}))
    else:
        print()
    return 0


def _run_text(model, args: argparse.Namespace, params, prompt: str, load_s: float, source=None) -> int:
    registry = build_registry(args)
    try:
        return _answer(model, args, params, prompt, load_s, registry, source)
    finally:
        close_registry(registry)


def _answer(model, args: argparse.Namespace, params, prompt: str, load_s: float, registry, source) -> int:
    from gptoss.agent import Agent, ToolResult, TurnDone, engine_source
    from gptoss.harmony.parser import FinalDelta, ReasoningDelta, ToolCallArgsDelta, ToolCallStarted
    from gptoss.harmony.render import user_message

    messages = header_messages(args.effort, resolve_date(args.date), args.instructions, registry)
    messages.append(user_message(prompt))
    agent = Agent(source or engine_source(model.transformer), registry, args.max_tool_rounds)
    out = Console(highlight=False, soft_wrap=True)
    done: TurnDone | None = None
    streaming = not args.json
    tool_results = []
    for event in agent.run(messages, params):
        if isinstance(event, TurnDone):
            done = event
        elif isinstance(event, ToolResult):
            tool_results.append((event.call, event.output))
            if streaming:
                err_console.print(f"\n← {describe_result(event.output)}", style="dim", markup=False,
                                  highlight=False)
        elif not streaming:
            continue
        elif isinstance(event, FinalDelta):
            out.print(event.text, end="", markup=False)
        elif isinstance(event, ReasoningDelta) and args.show_reasoning:
            err_console.print(event.text, end="", style="dim", markup=False, highlight=False)
        elif isinstance(event, ToolCallStarted):
            err_console.print(f"\n→ {event.recipient} ", end="", style="cyan", markup=False)
        elif isinstance(event, ToolCallArgsDelta):
            err_console.print(event.text, end="", style="cyan", markup=False, highlight=False)
    assert done is not None
    answer = "".join(m.content for m in done.new_messages if m.channel == "final" and not m.is_tool_call)
    reasoning = "\n".join(m.content for m in done.new_messages if m.channel == "analysis" and not m.is_tool_call)
    calls = [{"recipient": m.recipient, "channel": m.channel, "content_type": m.content_type,
              "arguments": m.content} for m in done.new_messages if m.is_tool_call]
    results = [{"recipient": m.recipient, "output": out_} for m, out_ in tool_results]
    u = done.usage
    if args.json:
        from gptoss.tools.browser.citations import resolve_citations

        browser = registry.get("browser")
        citations = resolve_citations(answer, browser, mode="keep")[1] if browser is not None else []
        print(json.dumps({
            "answer": answer, "reasoning": reasoning, "tool_calls": calls, "tool_results": results,
            "citations": citations,
            "finish_reason": done.finish_reason, "reasoning_effort": args.effort,
            "usage": {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
                      "reasoning_tokens": u.reasoning_tokens, "tool_rounds": u.tool_rounds},
            "load_s": round(load_s, 3), "generate_s": round(u.seconds, 3),
            "tokens_per_s": round(u.tokens_per_second, 2), "recoveries": done.recoveries,
        }, ensure_ascii=False))
        return 0
    out.print()
    for line in citation_lines(answer, registry):
        err_console.print(f"source {line}", style="cyan", markup=False, highlight=False)
    if done.pending_calls:
        err_console.print("(the model called a function; run it and continue in `gptoss chat` with /result)",
                          style="yellow")
    if done.finish_reason == "length":
        err_console.print(f"(stopped at --max-tokens {args.max_tokens})", style="yellow")
    err_console.print(f"[{u.completion_tokens} tokens, {u.tokens_per_second:.1f} tok/s]", style="dim")
    return 0
