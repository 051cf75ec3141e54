"""Tool ABC and the registry the agent loop routes calls through.

A tool owns a harmony namespace (``functions``, ``browser``, ``python``); a call's recipient
(``functions.get_weather``, ``browser.search``, ``python``) is routed by its namespace, never by
string prefix checks scattered through callers. Tool failures become tool messages for the
model, not exceptions (SPEC §5, STYLE lesson 13).

Prompt-injection hygiene lives in :meth:`ToolRegistry.dispatch`, the one door every tool result passes
on its way to the model: the text is neutralised (no harmony control-token literal survives, so a page or
a program cannot forge a message boundary) and bounded (``MAX_TOOL_OUTPUT_CHARS``), and the agent then
adds it as a *tool* message (author = the tool, never system or developer).
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gptoss.harmony.render import FunctionTool

MAX_TOOL_OUTPUT_CHARS = 50_000  # any one tool result, whatever the tool's own (smaller) limit
# Any <|word|>: the harmony control tokens and the reserved ones. "|" becomes a broken bar, so the text
# stays readable but can never be taken for (or parsed as) a control token.
_CONTROL_LITERAL = re.compile(r"<\|([A-Za-z0-9_]{1,64})\|>")


def neutralize(text: str) -> str:
    """Make tool output safe to put in front of the model: control-token literals like ``<|end|>``
    become ``<¦end¦>`` and unencodable characters (lone surrogates) become ``?``."""
    text = text.encode("utf-8", "replace").decode("utf-8")
    return _CONTROL_LITERAL.sub(lambda m: f"<¦{m.group(1)}¦>", text)


def bound(text: str, limit: int) -> str:
    """At most about ``limit`` characters: the head and the tail, with a note of what was left out."""
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    tail = limit - head
    omitted = len(text) - head - tail
    return (f"{text[:head]}\n[... {omitted} characters omitted: tool output is limited to {limit} characters ...]\n"
            f"{text[-tail:]}")


def safe_tool_output(text: str, limit: int = MAX_TOOL_OUTPUT_CHARS) -> str:
    """What may enter the conversation as a tool message: neutralised, then bounded."""
    return bound(neutralize(text if isinstance(text, str) else str(text)), limit)


@dataclass
class ToolCall:
    """What the model asked for: ``recipient`` as written and the raw argument text."""

    recipient: str
    arguments: str
    channel: str | None = "commentary"

    @property
    def namespace(self) -> str:
        return self.recipient.split(".", 1)[0]

    @property
    def name(self) -> str:
        return self.recipient.split(".", 1)[1] if "." in self.recipient else self.recipient


class Tool(ABC):
    """A namespace of callable functions. ``process`` never raises: errors become text."""

    namespace: str

    def functions(self) -> list[FunctionTool]:
        """Developer-message function declarations (only for the ``functions`` namespace)."""
        return []

    def can_handle(self, call: ToolCall) -> bool:
        return True

    def process(self, call: ToolCall) -> str:
        try:
            return self._process(call)
        except Exception as e:  # a tool bug must not end the conversation
            return self.error_message(call, e)

    @abstractmethod
    def _process(self, call: ToolCall) -> str: ...

    def error_message(self, call: ToolCall, error: Exception) -> str:
        return f"Error: {call.recipient} failed: {type(error).__name__}: {error}"


FunctionImpl = Callable[..., Any]


class FunctionHandler(Tool):
    """Developer-defined functions. A function declared without an implementation is returned
    to the caller as a pending call (the client runs it, as in the OpenAI APIs)."""

    namespace = "functions"

    def __init__(self) -> None:
        self._decls: dict[str, FunctionTool] = {}
        self._impls: dict[str, FunctionImpl] = {}

    def add(self, tool: FunctionTool, impl: FunctionImpl | None = None) -> None:
        self._decls[tool.name] = tool
        if impl is not None:
            self._impls[tool.name] = impl

    def functions(self) -> list[FunctionTool]:
        return list(self._decls.values())

    def can_handle(self, call: ToolCall) -> bool:
        return call.name in self._impls or call.name not in self._decls

    def _process(self, call: ToolCall) -> str:
        if call.name not in self._decls:
            known = ", ".join(sorted(self._decls)) or "none"
            return f"Error: no function named {call.name!r} (available: {known})"
        try:
            args = json.loads(call.arguments) if call.arguments.strip() else {}
        except json.JSONDecodeError as e:
            return f"Error: arguments are not valid JSON ({e.msg} at position {e.pos})"
        if not isinstance(args, dict):
            return "Error: arguments must be a JSON object"
        result = self._impls[call.name](**args)
        return result if isinstance(result, str) else json.dumps(result)


class ToolRegistry:
    """Tools by namespace."""

    def __init__(self, tools: list[Tool] | None = None) -> None:
        self._tools: dict[str, Tool] = {}
        self.functions = FunctionHandler()
        self.add(self.functions)
        for tool in tools or []:
            self.add(tool)

    def add(self, tool: Tool) -> None:
        self._tools[tool.namespace] = tool

    def add_function(self, tool: FunctionTool, impl: FunctionImpl | None = None) -> None:
        self.functions.add(tool, impl)

    def get(self, namespace: str) -> Tool | None:
        return self._tools.get(namespace)

    def names(self) -> list[str]:
        out = [f"functions.{f.name}" for f in self.functions.functions()]
        return out + [ns for ns in self._tools if ns != "functions"]

    def builtins(self) -> set[str]:
        return {ns for ns in self._tools if ns != "functions"}

    def dispatch(self, call: ToolCall) -> str | None:
        """Run the call; None means the caller must run it (a declared, unimplemented function).
        The result is always :func:`safe_tool_output` (neutralised and bounded)."""
        tool = self._tools.get(call.namespace)
        if tool is None:
            return safe_tool_output(f"Error: unknown tool {call.recipient!r}; "
                                    f"available: {', '.join(self.names()) or 'none'}")
        if not tool.can_handle(call):
            return None
        return safe_tool_output(tool.process(call))
