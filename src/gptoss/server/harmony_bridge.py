"""OpenAI request fields <-> harmony messages (SPEC §6.7).

- effort: every spelling (``reasoning.effort``, ``reasoning_effort``, ``chat_template_kwargs.reasoning_effort``)
  is honoured identically on both APIs; ``minimal`` -> low; anything else -> 400; spellings that disagree -> 400.
- system/developer messages (Chat) and system/developer input items (Responses) join ``instructions`` in order,
  in the developer message (the system message is always the runtime's own, §4.3).
- Responses items: user -> ``user``; assistant text -> assistant ``final``; ``reasoning`` -> ``analysis`` (kept
  only when it follows the last assistant message and the input ends with tool output, §4.6);
  ``function_call`` -> commentary call ``to=functions.NAME``; ``function_call_output`` -> tool message authored
  ``functions.NAME`` (the name found by ``call_id``; unknown id -> 400).
- function tools: ``strict`` defaults to true on Responses and false on Chat (as OpenAI); strict arguments are
  constrained to the parameter schema (SPEC §7).
- Chat: assistant ``reasoning``/``reasoning_content`` -> analysis; ``tool_calls`` -> calls (content beside them
  is a commentary preamble); ``tool`` messages -> tool messages by ``tool_call_id``.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from openai_harmony import Message

from gptoss.harmony.render import (
    FunctionTool,
    ResponseFormat,
    assistant_message,
    developer_message,
    parse_effort,
    system_message,
    tool_call_message,
    tool_result_message,
    user_message,
)
from gptoss.server.constrain import NO_PARAMETERS, ConstraintSpec, compile_schema
from gptoss.server.errors import bad_request
from gptoss.server.protocol import new_id

_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Built-in tool types of the APIs -> the harmony namespace that serves them (SPEC §6.2, §6.7).
BUILTIN_TOOLS = {"web_search": "browser", "web_search_preview": "browser", "browser_search": "browser",
                 "web_search_preview_2025_03_11": "browser", "code_interpreter": "python"}
ITEM_PREFIX = {"message": "msg", "reasoning": "rs", "function_call": "fc", "function_call_output": "fco",
               "web_search_call": "ws", "code_interpreter_call": "ci"}


# -- effort ---------------------------------------------------------------------------------------------
def resolve_effort(spellings: Sequence[tuple[str, Any]]) -> str:
    """The effective effort from ``[(param, value), ...]``; unset values are skipped, default medium."""
    chosen: tuple[str, str] | None = None
    for param, value in spellings:
        if value is None:
            continue
        try:
            effort = parse_effort(value)
        except ValueError as e:
            raise bad_request(str(e), param=param) from None
        if chosen is not None and chosen[1] != effort:
            raise bad_request(f"conflicting reasoning efforts: {chosen[0]}={chosen[1]!r} and {param}={effort!r}",
                              param=param)
        chosen = chosen or (param, effort)
    return chosen[1] if chosen else "medium"


def effort_spellings(reasoning: Any, reasoning_effort: Any, template_kwargs: Any) -> list[tuple[str, Any]]:
    kwargs = template_kwargs if isinstance(template_kwargs, dict) else {}
    return [("reasoning.effort", getattr(reasoning, "effort", None)), ("reasoning_effort", reasoning_effort),
            ("chat_template_kwargs.reasoning_effort", kwargs.get("reasoning_effort"))]


# -- tools ----------------------------------------------------------------------------------------------
def parse_functions(tools: list[dict] | None, chat: bool) -> list[FunctionTool]:
    out: list[FunctionTool] = []
    for i, tool in enumerate(tools or []):
        param = f"tools[{i}]"
        kind = tool.get("type")
        if not isinstance(kind, str):
            raise bad_request("each tool needs a string 'type'", param=f"{param}.type")
        if kind in BUILTIN_TOOLS:
            continue  # see parse_builtins
        if kind != "function":
            raise bad_request(f"unsupported tool type {kind!r} (expected 'function')", param=f"{param}.type")
        spec = tool.get("function") if chat else tool
        if chat and not isinstance(spec, dict):
            raise bad_request("a Chat function tool needs a 'function' object", param=f"{param}.function")
        assert isinstance(spec, dict)
        where = f"{param}.function" if chat else param
        name = spec.get("name")
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise bad_request(f"invalid function name {name!r}: use 1-64 letters, digits, '_' or '-'",
                              param=f"{where}.name")
        params = spec.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise bad_request("parameters must be a JSON Schema object", param=f"{where}.parameters")
        if any(f.name == name for f in out):
            raise bad_request(f"duplicate function name {name!r}", param=f"{where}.name")
        strict = spec.get("strict")
        strict = (not chat) if strict is None else bool(strict)  # OpenAI defaults: Responses true, Chat false
        out.append(FunctionTool(name, spec.get("description") or "", params, strict))
    return out


def parse_builtins(tools: list[dict] | None, available: Sequence[str]) -> tuple[str, ...]:
    """Namespaces (``browser``, ``python``) of the built-in tools a request asks for; each must be one the
    server was started with (``available``), else 400 naming the flag that enables it."""
    wanted: list[str] = []
    for i, tool in enumerate(tools or []):
        kind = tool.get("type") if isinstance(tool, dict) else None
        ns = BUILTIN_TOOLS.get(kind) if isinstance(kind, str) else None
        if ns is None:
            continue
        if ns not in available:
            flag = "--browser local|web" if ns == "browser" else "--python"
            raise bad_request(f"built-in tool {tool['type']!r} is not enabled on this server (start it with {flag})",
                              param=f"tools[{i}].type", code="unsupported_tool")
        if ns not in wanted:
            wanted.append(ns)
    return tuple(wanted)


@dataclass(frozen=True)
class ToolChoice:
    mode: str  # auto | none | required | named
    names: tuple[str, ...] = ()

    @property
    def forced(self) -> tuple[str, ...]:
        return self.names if self.mode in ("required", "named") else ()


def parse_tool_choice(choice: Any, functions: Sequence[FunctionTool], chat: bool) -> ToolChoice:
    names = tuple(f.name for f in functions)
    if choice is None or choice == "auto":
        return ToolChoice("auto", names)
    if choice == "none":
        return ToolChoice("none")
    if choice == "required":
        if not names:
            raise bad_request("tool_choice 'required' needs at least one function tool", param="tool_choice")
        return ToolChoice("required", names)
    if isinstance(choice, dict) and choice.get("type") == "function":
        spec = choice.get("function") if chat else choice
        name = spec.get("name") if isinstance(spec, dict) else None
        if name is None and isinstance(choice.get("name"), str):
            name = choice["name"]  # accept either shape on both APIs
        if name not in names:
            raise bad_request(f"tool_choice names function {name!r}, which is not among the tools",
                              param="tool_choice")
        return ToolChoice("named", (name,))
    raise bad_request(f"unsupported tool_choice {choice!r}: use 'auto', 'none', 'required' or a function",
                      param="tool_choice")


def parse_format(fmt: dict | None, param: str, chat: bool) -> tuple[ResponseFormat | None, dict | None]:
    """(what the developer message shows, the JSON schema to enforce) for text.format / response_format."""
    if fmt is None:
        return None, None
    kind = fmt.get("type")
    if kind in (None, "text"):
        return None, None
    if kind == "json_object":
        return ResponseFormat("json_object", {"type": "object"}), {"type": "object"}
    if kind != "json_schema":
        raise bad_request(f"unsupported format type {kind!r}", param=f"{param}.type")
    spec = fmt.get("json_schema") if chat else fmt
    if not isinstance(spec, dict):
        raise bad_request("json_schema format needs a 'json_schema' object", param=f"{param}.json_schema")
    schema = spec.get("schema")
    if not isinstance(schema, dict):
        raise bad_request("json_schema format needs a 'schema' object", param=f"{param}.schema")
    name = spec.get("name") or "response"
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise bad_request(f"invalid format name {name!r}", param=f"{param}.name")
    return ResponseFormat(name, schema, spec.get("description")), schema


def constraint_spec(final_schema: dict | None, functions: Sequence[FunctionTool], choice: ToolChoice,
                    builtins: Sequence[str] = ()) -> ConstraintSpec | None:
    final = compile_schema(final_schema) if final_schema is not None else None
    forced = choice.forced
    grammars = {}
    for f in functions:
        if f.strict or f.name in forced:
            grammar = compile_schema(f.parameters if f.parameters else NO_PARAMETERS)
            if grammar is not None:
                grammars[f.name] = grammar
    headers = None if builtins else tuple(f.name for f in functions)
    spec = ConstraintSpec(final, grammars, forced, headers)
    return spec if spec.active else None


# -- conversation ---------------------------------------------------------------------------------------
def header_messages(effort: str, instructions: Sequence[str], functions: Sequence[FunctionTool],
                    fmt: ResponseFormat | None, builtin: dict[str, Any] | None = None) -> list[Message]:
    """System + developer messages; ``builtin`` = ``system_message`` keywords declaring browser/python."""
    today = datetime.date.today().isoformat()
    dev = developer_message("\n\n".join(instructions) or None, list(functions), fmt)
    return [system_message(effort, today, **(builtin or {}))] + ([dev] if dev is not None else [])


def content_text(content: Any, param: str) -> str:
    """Text of a string or a list of text parts (input_text / output_text / text / refusal)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad_request("content must be a string or a list of parts", param=param)
    texts = []
    for j, part in enumerate(content):
        if isinstance(part, str):
            texts.append(part)
            continue
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text", "reasoning_text", "summary_text"):
            texts.append(str(part.get("text", "")))
        elif kind == "refusal":
            texts.append(str(part.get("refusal", "")))
        else:
            raise bad_request(f"content part type {kind!r} is not supported (text only)", param=f"{param}[{j}].type")
    return "".join(texts)


def _check_name(name: Any, param: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise bad_request(f"invalid function name {name!r}", param=param)
    return name


def _output_text(output: Any, param: str) -> str:
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return content_text(output, param)
    return json.dumps(output)


def normalize_input(value: str | list[dict] | None) -> list[dict]:
    """Request input as stored items: a string becomes one user message; every item gets an id."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [{"type": "message", "role": "user", "content": value}]
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise bad_request("each input item must be an object", param=f"input[{i}]")
        item = dict(item)
        kind = item.setdefault("type", "message" if "role" in item else None)
        if not isinstance(kind, str):
            raise bad_request("each input item needs a string 'type'", param=f"input[{i}].type")
        if kind == "message":
            role = item.get("role")
            part = "output_text" if role == "assistant" else "input_text"
            if isinstance(item.get("content"), str):
                item["content"] = [{"type": part, "text": item["content"]}]
            item.setdefault("status", "completed")
        if kind in ITEM_PREFIX and not item.get("id"):
            item["id"] = new_id(ITEM_PREFIX[kind])
        out.append(item)
    return out


def items_to_messages(items: Sequence[dict], param: str = "input") -> tuple[list[Message], list[str]]:
    """(conversation messages, extra instructions from system/developer items)."""
    messages: list[Message] = []
    instructions: list[str] = []
    calls: dict[str, str] = {}
    kinds = [it.get("type") for it in items]
    last_assistant = max((i for i, it in enumerate(items) if kinds[i] == "message" and it.get("role") == "assistant"),
                         default=-1)
    ends_with_output = bool(items) and kinds[-1] == "function_call_output"
    for i, it in enumerate(items):
        where, kind = f"{param}[{i}]", kinds[i]
        if kind == "message":
            role, text = it.get("role"), content_text(it.get("content"), f"{where}.content")
            if role == "user":
                messages.append(user_message(text))
            elif role == "assistant":
                messages.append(assistant_message(text, "final"))
            elif role in ("system", "developer"):
                instructions.append(text)
            else:
                raise bad_request(f"unsupported message role {role!r}", param=f"{where}.role")
        elif kind == "reasoning":
            parts = it.get("content") or it.get("summary") or []
            text = content_text(parts, f"{where}.content")
            if i > last_assistant and ends_with_output and text:
                messages.append(assistant_message(text, "analysis"))
        elif kind == "function_call":
            name = _check_name(it.get("name"), f"{where}.name")
            call_id = it.get("call_id")
            if not isinstance(call_id, str) or not call_id:
                raise bad_request("function_call needs a call_id", param=f"{where}.call_id")
            calls[call_id] = name
            args = it.get("arguments")
            messages.append(tool_call_message(f"functions.{name}", args if isinstance(args, str) else json.dumps(args)))
        elif kind == "function_call_output":
            name = calls.get(str(it.get("call_id")))
            if name is None:
                raise bad_request(f"no function_call with call_id {it.get('call_id')!r} precedes this output",
                                  param=f"{where}.call_id")
            messages.append(tool_result_message(f"functions.{name}", _output_text(it.get("output"), f"{where}.output")))
        elif kind == "web_search_call":
            action = it.get("action") if isinstance(it.get("action"), dict) else {}
            verb, args = _browser_call(action)
            messages.append(tool_call_message(f"browser.{verb}", json.dumps(args), "analysis"))
        elif kind == "code_interpreter_call":
            messages.append(tool_call_message("python", str(it.get("code") or ""), "analysis", None))
            outputs = it.get("outputs") if isinstance(it.get("outputs"), list) else []
            logs = "".join(str(o.get("logs", "")) for o in outputs if isinstance(o, dict))
            if logs:  # the result the model saw, as far as the item carries it
                messages.append(tool_result_message("python", logs, "analysis"))
        elif kind == "item_reference":
            raise bad_request("item_reference input items are not supported; use previous_response_id",
                              param=f"{where}.type")
        else:
            raise bad_request(f"unsupported input item type {kind!r}", param=f"{where}.type")
    return messages, instructions


def _browser_call(action: dict) -> tuple[str, dict]:
    """A replayed ``web_search_call`` action as the browser call the model made."""
    kind = action.get("type")
    if kind == "open_page":
        return "open", ({"id": action["url"]} if action.get("url") else {})
    if kind in ("find", "find_in_page"):
        return "find", {"pattern": str(action.get("pattern") or "")}
    return "search", {"query": str(action.get("query") or "")}


def chat_to_messages(chat: Sequence[dict]) -> tuple[list[Message], list[str]]:
    messages: list[Message] = []
    instructions: list[str] = []
    calls: dict[str, str] = {}
    for i, m in enumerate(chat):
        where, role = f"messages[{i}]", m.get("role")
        if role in ("system", "developer"):
            instructions.append(content_text(m.get("content"), f"{where}.content"))
        elif role == "user":
            messages.append(user_message(content_text(m.get("content"), f"{where}.content")))
        elif role == "assistant":
            reasoning = m.get("reasoning") or m.get("reasoning_content")
            if isinstance(reasoning, str) and reasoning:
                messages.append(assistant_message(reasoning, "analysis"))
            text = content_text(m.get("content"), f"{where}.content") if m.get("content") is not None else None
            tool_calls = m.get("tool_calls") or []
            if not isinstance(tool_calls, list):
                raise bad_request("tool_calls must be a list", param=f"{where}.tool_calls")
            if tool_calls and text:
                messages.append(assistant_message(text, "commentary"))  # a preamble before the calls
            elif text is not None and not tool_calls:
                messages.append(assistant_message(text, "final"))
            for j, tc in enumerate(tool_calls):
                fn = tc.get("function") if isinstance(tc, dict) else None
                if not isinstance(fn, dict):
                    raise bad_request("tool call needs a 'function' object", param=f"{where}.tool_calls[{j}]")
                name = _check_name(fn.get("name"), f"{where}.tool_calls[{j}].function.name")
                if tc.get("id"):
                    calls[str(tc["id"])] = name
                args = fn.get("arguments")
                messages.append(tool_call_message(f"functions.{name}",
                                                  args if isinstance(args, str) else json.dumps(args or {})))
        elif role == "tool":
            name = calls.get(str(m.get("tool_call_id")))
            if name is None:
                raise bad_request(f"tool message answers unknown tool_call_id {m.get('tool_call_id')!r}",
                                  param=f"{where}.tool_call_id")
            text = content_text(m.get("content"), f"{where}.content")
            messages.append(tool_result_message(f"functions.{name}", text))
        elif role == "function":  # legacy function-calling message
            name = _check_name(m.get("name"), f"{where}.name")
            text = content_text(m.get("content"), f"{where}.content")
            messages.append(tool_result_message(f"functions.{name}", text))
        else:
            raise bad_request(f"unsupported message role {role!r}", param=f"{where}.role")
    return messages, instructions
