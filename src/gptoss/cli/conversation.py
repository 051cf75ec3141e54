"""Arguments and set-up shared by the harmony-speaking commands (``generate``, ``chat``)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import Any

from openai_harmony import Message

from gptoss.cli.common import add_model_arguments, positive_int
from gptoss.harmony.render import EFFORTS, FunctionTool, developer_message, parse_effort, system_message
from gptoss.tools.base import ToolRegistry
from gptoss.tools.builtin import (
    BuiltinOptions,
    add_builtin_arguments,
    make_builtin_tools,
    options_from_args,
    system_message_options,
)

DEFAULT_MAX_TOKENS = 2048


def effort_arg(text: str) -> str:
    try:
        return parse_effort(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_conversation_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("--reasoning-effort", "--effort", dest="effort", default="medium", type=effort_arg,
                   metavar="{" + ",".join(EFFORTS) + "}",
                   help="how long the model thinks before answering (default: medium)")
    p.add_argument("--show-reasoning", action="store_true", help="show the chain of thought (dimmed)")
    p.add_argument("--instructions", metavar="TEXT", help="developer instructions (the 'system prompt')")
    p.add_argument("--functions", metavar="FILE", type=Path,
                   help="JSON list of function tools ({name, description, parameters} or OpenAI "
                        "{type: function, function: {...}}); calls are shown and returned to you")
    p.add_argument("--date", metavar="YYYY-MM-DD", default=None,
                   help="current date told to the model (default: today; 'none' to omit)")
    p.add_argument("--max-tokens", type=positive_int, default=DEFAULT_MAX_TOKENS,
                   help="sampled tokens per turn, reasoning included (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy (default: %(default)s)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default: %(default)s)")
    p.add_argument("--seed", type=int, help="seed for reproducible sampling")
    p.add_argument("--max-tool-rounds", type=int, default=8, help="tool calls per turn (default: %(default)s)")
    add_builtin_arguments(p)


def load_functions(path: Path | None) -> list[FunctionTool]:
    """Read function declarations; every problem names the file and the entry."""
    if path is None:
        return []
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise ValueError(f"{path}: cannot read functions file ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON ({e})") from None
    if isinstance(data, dict):
        data = data.get("tools", [data])
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of function tools")
    tools = []
    for i, entry in enumerate(data):
        spec: Any = entry.get("function", entry) if isinstance(entry, dict) else None
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise ValueError(f"{path}: entry {i} is not a function tool with a 'name'")
        params = spec.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise ValueError(f"{path}: function {spec['name']!r}: 'parameters' must be a JSON schema object")
        tools.append(FunctionTool(spec["name"], spec.get("description") or "", params,
                                  bool(spec.get("strict", False))))
    return tools


def resolve_date(value: str | None) -> str | None:
    if value is None:
        return dt.date.today().isoformat()
    if value.lower() == "none":
        return None
    try:
        return dt.date.fromisoformat(value).isoformat()
    except ValueError:
        raise ValueError(f"--date must look like 2025-08-05 (or 'none'), got {value!r}") from None


def header_messages(effort: str, date: str | None, instructions: str | None,
                    tools: ToolRegistry) -> list[Message]:
    """The system message and, if there is anything to say, the developer message."""
    builtins = [tools.get(ns) for ns in sorted(tools.builtins())]
    out = [system_message(effort, date, **system_message_options(builtins))]
    dev = developer_message(instructions, tools.functions.functions())
    return out + ([dev] if dev is not None else [])


def builtin_options(args: argparse.Namespace) -> BuiltinOptions:
    """The checked ``--browser``/``--python`` options (ValueError for a bad combination)."""
    return options_from_args(args)


def build_registry(args: argparse.Namespace, opts: BuiltinOptions | None = None) -> ToolRegistry:
    """Declared functions plus fresh built-in tools: one registry per conversation."""
    registry = ToolRegistry(make_builtin_tools(opts if opts is not None else builtin_options(args)))
    for fn in load_functions(args.functions):
        registry.add_function(fn)
    return registry


def close_registry(registry: ToolRegistry) -> None:
    """End the conversation's tools (the python interpreter and its scratch directory)."""
    from gptoss.tools.builtin import close_tools

    close_tools(registry.get(ns) for ns in registry.builtins())


def describe_result(output: str, max_lines: int = 40) -> str:
    """A tool result as the terminal shows it: the first ``max_lines`` lines (the model gets all of it)."""
    lines = output.split("\n")
    if len(lines) <= max_lines:
        return output
    return "\n".join(lines[:max_lines]) + f"\n… ({len(lines) - max_lines} more lines)"


def citation_lines(answer: str, registry: ToolRegistry) -> list[str]:
    """``【cursor†La-Lb】`` markers in ``answer`` as ``[n] title <url> (lines)`` lines, via the browser's pages."""
    from gptoss.tools.browser.citations import CITATION_RE, resolve_citations

    browser = registry.get("browser")
    if browser is None:
        return []
    _, annotations = resolve_citations(answer, browser, mode="keep")
    out = []
    for n, a in enumerate(annotations, 1):
        m = CITATION_RE.fullmatch(answer[a["start_index"]:a["end_index"]])
        lines = "" if m is None else f" lines {m.group(2)}" + (f"-{m.group(3)}" if m.group(3) else "")
        out.append(f"[{n}] {a['title'] or a['url']} <{a['url']}>{lines}")
    return out
