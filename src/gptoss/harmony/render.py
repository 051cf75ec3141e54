"""Build harmony conversations and render them to prompt tokens (SPEC §4).

The data model and the renderer are openai-harmony's (``Message``, ``SystemContent``, ``DeveloperContent``,
``ToolDescription``, ``render_conversation_for_completion``); this module only adds the project's rules on top:

- the system message is always built here (§4.3): identity, ``Knowledge cutoff: 2024-06``, optional validated
  ``Current date``, ``Reasoning:`` line, built-in browser/python namespaces from openai-harmony's own configs;
- openai-harmony adds the ``Calls to these tools must go to the commentary channel: 'functions'.`` line to the system
  message by itself, when *some developer message of the same conversation* holds a non-empty ``functions``
  namespace (it scans the whole conversation at render time; rendering the system message alone never shows it);
- the ``# Response Formats`` section (§4.4) has no openai-harmony API. It must come last, after ``# Tools``, and the
  developer text must tokenize exactly as one string would. Without functions it is appended to the instructions
  text; with functions it is a second ``TextContent`` after the ``DeveloperContent`` (the tools section ends with the
  word ``functions``, so the split cannot change BPE pre-tokenization);
- analysis dropping is done by :func:`filter_history` (§4.6), never by openai-harmony's narrower auto-drop;
- text content is encoded by openai-harmony as ordinary text, so a typed ``<|end|>`` never becomes a control token.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import openai_harmony as oh
from openai_harmony import (
    Author,
    Conversation,
    DeveloperContent,
    HarmonyEncoding,
    Message,
    ReasoningEffort,
    RenderConversationConfig,
    Role,
    SystemContent,
    TextContent,
    ToolDescription,
    ToolNamespaceConfig,
)

from gptoss.tokenizer import configure_offline_env

__all__ = [
    "CHANNELS", "EFFORTS", "FunctionTool", "ResponseFormat", "assistant_message", "developer_message",
    "filter_history", "harmony_encoding", "parse_effort", "render_for_completion", "render_text", "stop_tokens",
    "system_message", "tool_call_message", "tool_result_message", "user_message",
]

EFFORTS = ("low", "medium", "high")
EFFORT_ALIASES = {"minimal": "low"}  # project choice (SPEC §6.7): clamp, never reject
CHANNELS = ("analysis", "commentary", "final")
MODEL_IDENTITY = "You are ChatGPT, a large language model trained by OpenAI."
KNOWLEDGE_CUTOFF = "2024-06"
CONSTRAIN_JSON = "<|constrain|>json"

_NAME_RE = re.compile(r"[A-Za-z0-9_-]+")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_HARMONY_EFFORT = {"low": ReasoningEffort.LOW, "medium": ReasoningEffort.MEDIUM, "high": ReasoningEffort.HIGH}


def parse_effort(value: str | None) -> str:
    """Normalise a reasoning-effort spelling: case-insensitive low/medium/high, ``minimal`` -> low, None -> medium."""
    if value is None:
        return "medium"
    if isinstance(value, str):
        word = value.strip().lower()
        word = EFFORT_ALIASES.get(word, word)
        if word in EFFORTS:
            return word
    raise ValueError(f"invalid reasoning effort {value!r}: expected one of 'low', 'medium', 'high' "
                     "(or 'minimal', treated as 'low')")


def _check_name(kind: str, name: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValueError(f"invalid {kind} name {name!r}: use only letters, digits, '_' and '-'")


@dataclass(frozen=True)
class FunctionTool:
    """A developer-defined function (rendered in the developer message's ``functions`` namespace).

    ``strict`` is not rendered (harmony has no notion of it); constrained decoding enforces it (SPEC §7).
    """

    name: str
    description: str = ""
    parameters: dict | None = None
    strict: bool = False

    def __post_init__(self) -> None:
        _check_name("function", self.name)
        if self.parameters is not None and not isinstance(self.parameters, dict):
            raise ValueError(f"function {self.name!r}: parameters must be a JSON Schema object (dict)")

    def to_harmony(self) -> ToolDescription:
        """As an openai-harmony ``ToolDescription``. An object schema without properties counts as no parameters,
        so it renders ``type NAME = () => any;`` (harmony's format guide) rather than an empty ``(_: {\\n})``."""
        params = self.parameters
        if params is not None and not params.get("properties") and params.get("type", "object") == "object":
            params = None
        return ToolDescription.new(self.name, self.description or "", params)


@dataclass(frozen=True)
class ResponseFormat:
    """A structured-output format, rendered as the developer message's ``# Response Formats`` section."""

    name: str
    schema: dict
    description: str | None = None

    def __post_init__(self) -> None:
        _check_name("response format", self.name)
        if not isinstance(self.schema, dict):
            raise ValueError(f"response format {self.name!r}: schema must be a JSON Schema object (dict)")

    def section(self) -> str:
        lines = ["# Response Formats", "", f"## {self.name}", ""]
        if self.description:
            lines += [f"// {line}" for line in self.description.splitlines()]
        lines.append(json.dumps(self.schema, ensure_ascii=False, separators=(",", ":")))
        return "\n".join(lines)


@cache
def harmony_encoding() -> HarmonyEncoding:
    """openai-harmony's gpt-oss encoding, loaded from the shipped vocabulary (never downloaded)."""
    configure_offline_env()
    return oh.load_harmony_encoding(oh.HarmonyEncodingName.HARMONY_GPT_OSS)


def stop_tokens() -> list[int]:
    """Sampling stops: ``<|return|>`` and ``<|call|>`` from the encoding, plus ``<|endoftext|>`` as a safety net.
    ``<|end|>`` is deliberately absent (SPEC §4.7)."""
    return list(_stop_tokens())


@cache
def _stop_tokens() -> tuple[int, ...]:
    # Computed once: encoding with allowed specials builds a regex over every special token (milliseconds of
    # GIL time, per request, on the server's hot path).
    enc = harmony_encoding()
    eot = enc.encode("<|endoftext|>", allowed_special={"<|endoftext|>"})
    return tuple(sorted(set(enc.stop_tokens_for_assistant_actions()) | set(eot)))


def system_message(effort: str = "medium", date: str | None = None, browser: bool = False, python: bool = False,
                   *, python_description: str | None = None) -> Message:
    """The system message (SPEC §4.3). ``date`` is ``YYYY-MM-DD``. ``python_description`` replaces the python
    tool's trained description (SPEC pitfall 27: a stateless tool must say so)."""
    content = (SystemContent.new().with_model_identity(MODEL_IDENTITY).with_knowledge_cutoff(KNOWLEDGE_CUTOFF)
               .with_reasoning_effort(_HARMONY_EFFORT[parse_effort(effort)])
               .with_required_channels(list(CHANNELS)))
    if date is not None:
        content = content.with_conversation_start_date(_check_date(date))
    if browser:
        content = content.with_browser_tool()
    if python:
        ns = ToolNamespaceConfig.python()
        if python_description is not None:
            ns = ns.model_copy(update={"description": python_description})
        content = content.with_tools(ns)
    return Message.from_role_and_content(Role.SYSTEM, content)


def _check_date(date: str) -> str:
    if isinstance(date, str) and _DATE_RE.fullmatch(date):
        try:
            datetime.date.fromisoformat(date)
            return date
        except ValueError:
            pass
    raise ValueError(f"invalid current date {date!r}: expected a real calendar date as YYYY-MM-DD")


def developer_message(instructions: str | None = None, functions: Sequence[FunctionTool] = (),
                      response_format: ResponseFormat | None = None) -> Message | None:
    """The developer message (SPEC §4.4), or None when there is nothing to say."""
    if instructions == "":
        instructions = None
    if instructions is None and not functions and response_format is None:
        return None
    content = DeveloperContent.new()
    extra: list[TextContent] = []
    rf = response_format.section() if response_format is not None else None
    if functions:
        names = [f.name for f in functions]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate function names in {names}")
        content = content.with_function_tools([f.to_harmony() for f in functions])
        if rf is not None:  # after "} // namespace functions": a clean pre-token boundary
            extra.append(TextContent(text="\n\n" + rf))
    elif rf is not None:
        if instructions is None:
            extra.append(TextContent(text=rf))
        else:
            instructions = f"{instructions}\n\n{rf}"
    if instructions is not None:
        content = content.with_instructions(instructions)
    return Message.from_role_and_contents(Role.DEVELOPER, [content, *extra])


def user_message(text: str) -> Message:
    return Message.from_role_and_content(Role.USER, text)


def _check_channel(channel: str) -> str:
    if channel not in CHANNELS:
        raise ValueError(f"invalid channel {channel!r}: expected one of {', '.join(CHANNELS)}")
    return channel


def assistant_message(text: str, channel: str = "final") -> Message:
    """An assistant message for history. Rendered with ``<|end|>`` (a sampled ``<|return|>`` is never stored)."""
    return Message.from_role_and_content(Role.ASSISTANT, text).with_channel(_check_channel(channel))


def tool_call_message(recipient: str, arguments: str, channel: str = "commentary",
                      content_type: str | None = CONSTRAIN_JSON) -> Message:
    """An assistant tool call, e.g. recipient ``functions.get_weather`` (rendered in the role slot, ends ``<|call|>``).
    Built-in tools: channel ``analysis``; python passes ``content_type=None`` (raw code)."""
    if not recipient or recipient == "all" or any(c.isspace() for c in recipient):
        raise ValueError(f"invalid tool-call recipient {recipient!r}")
    msg = (Message.from_role_and_content(Role.ASSISTANT, arguments).with_channel(_check_channel(channel))
           .with_recipient(recipient))
    return msg.with_content_type(content_type) if content_type else msg


def tool_result_message(tool_name: str, output: str, channel: str = "commentary") -> Message:
    """A tool's output: author = the tool name (``functions.x``, ``browser.search``, ``python``), to ``assistant``,
    on the call's channel."""
    if not tool_name or any(c.isspace() for c in tool_name):
        raise ValueError(f"invalid tool name {tool_name!r}")
    return (Message.from_author_and_content(Author.new(Role.TOOL, tool_name), output)
            .with_channel(_check_channel(channel)).with_recipient("assistant"))


def filter_history(messages: Sequence[Message]) -> list[Message]:
    """SPEC §4.6: drop ``analysis``-channel messages (thoughts, built-in tool calls and their results) that come
    before the last assistant ``final`` message; keep everything after it (an ongoing tool loop). Messages on other
    channels, and system/developer/user messages, are always kept."""
    last_final = max((i for i, m in enumerate(messages) if m.author.role == Role.ASSISTANT and m.channel == "final"),
                     default=-1)
    return [m for i, m in enumerate(messages)
            if not (i < last_final and m.channel == "analysis"
                    and m.author.role not in (Role.SYSTEM, Role.DEVELOPER))]


def render_for_completion(messages: Sequence[Message]) -> list[int]:
    """Prompt tokens: the filtered history plus ``<|start|>assistant`` (SPEC §4.7)."""
    conversation = Conversation.from_messages(filter_history(messages))
    return harmony_encoding().render_conversation_for_completion(
        conversation, Role.ASSISTANT, RenderConversationConfig(auto_drop_analysis=False))


def render_text(tokens: Sequence[int]) -> str:
    """Decode tokens for debugging and golden files; special tokens appear literally (``<|start|>``...)."""
    return harmony_encoding().decode(list(tokens))
