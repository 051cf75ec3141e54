"""One generation for one API request: the Agent loop over the engine, as API output items.

:class:`Turn` runs in a worker thread. It pushes item events (:class:`ItemAdded`, :class:`ItemDelta`,
:class:`ItemDone`) to a sink as they happen -- an item is *added* the moment its header closes, before its
first content token -- and returns a :class:`TurnResult`. Both APIs format the same events.

Items: analysis without a recipient -> ``reasoning``; ``final`` -> ``message``; a call to a declared function ->
``function_call`` (the turn then ends: the client runs it); a call to an enabled built-in tool ->
``web_search_call`` / ``code_interpreter_call``, run by the server, after which generation goes on in the same
turn. Recipient-less commentary preambles are dropped (counted in usage). Calls the server cannot route
(hallucinated tools) get an error tool message and the model goes on, bounded by ``max_tool_rounds``. With a
browser, citation markers in the answer become `` ([domain](url))`` plus ``url_citation`` annotations.
Usage: ``input_tokens`` = the first rendered prompt plus tool messages inserted by the server (built-in tool
results are not sampled, so they count as input); ``output_tokens`` = every sampled token; ``cached_tokens`` =
the first prompt's tokens the engine took from its prefix cache instead of recomputing.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from openai_harmony import Message

from gptoss.agent import Agent, ToolResult, TurnDone
from gptoss.engine.sampling import SamplingParams
from gptoss.harmony.parser import (
    FinalDelta,
    MessageDone,
    MessageStarted,
    ParsedMessage,
    ReasoningDelta,
    ToolCallArgsDelta,
)
from gptoss.harmony.render import FunctionTool
from gptoss.server.constrain import ConstraintSpec, HarmonyConstraint, matches_schema
from gptoss.server.engine import Engine, EngineBusy
from gptoss.server.items import (
    BUILTIN_KINDS,
    PREFIX,
    CitationFilter,
    Item,
    ItemAdded,
    ItemAnnotation,
    ItemDelta,
    ItemDone,
    ItemEvent,
    ItemProgress,
)
from gptoss.server.protocol import new_id
from gptoss.tools.base import Tool, ToolRegistry

__all__ = ["Item", "ItemAdded", "ItemAnnotation", "ItemDelta", "ItemDone", "ItemEvent", "ItemProgress", "Turn",
           "TurnRequest", "TurnResult"]

log = logging.getLogger("gptoss.server")


@dataclass
class TurnRequest:
    messages: list[Message]
    params: SamplingParams
    functions: Sequence[str] = ()  # declared function names: their calls become function_call items
    constraint: ConstraintSpec | None = None
    stop_strings: Sequence[str] = ()
    max_tool_rounds: int = 3
    builtins: Sequence[Tool] = ()  # browser / python tools the server runs for this turn
    container_id: str | None = None  # names the python session in code_interpreter_call items
    prompt: Sequence[int] | None = None  # messages already rendered (the route measured it): not rendered twice


@dataclass
class TurnResult:
    status: str  # completed | incomplete | failed | cancelled
    finish_reason: str  # stop | tool_calls | length | cancelled | error
    items: list[Item]
    input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cached_tokens: int = 0
    incomplete_reason: str | None = None
    error: dict[str, str] | None = None
    notes: list[str] = field(default_factory=list)


class _StopFilter:
    """Cuts the answer at the first stop string, holding back text that may still become one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.buf = ""
        self.hit = False

    def feed(self, text: str) -> str:
        if not self.stops:
            return text
        if self.hit:
            return ""
        self.buf += text
        cut = min((i for i in (self.buf.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.hit, out, self.buf = True, self.buf[:cut], ""
            return out
        keep = max(len(s) for s in self.stops) - 1
        out = self.buf[:len(self.buf) - keep] if len(self.buf) > keep else ""
        self.buf = self.buf[len(out):]
        return out

    def flush(self) -> str:
        out, self.buf = ("" if self.hit else self.buf), ""
        return out


class Turn:
    def __init__(self, engine: Engine, req: TurnRequest, sink: Callable[[ItemEvent], None] | None = None,
                 cancel: threading.Event | None = None) -> None:
        self.engine = engine
        self.req = req
        self.sink = sink or (lambda event: None)
        self.cancel = cancel or threading.Event()
        self.items: list[Item] = []
        self.current: Item | None = None
        self.stopper = _StopFilter(req.stop_strings)
        self.prompt_lens: list[int] = []
        self.sampled: list[int] = []
        self.cached_tokens = 0  # of the first round's prompt, from engines that report it
        self.constraints: list[HarmonyConstraint] = []
        self.namespaces = {t.namespace for t in req.builtins}
        browser = next((t for t in req.builtins if t.namespace == "browser"), None)
        self.browser = browser
        self.citations = CitationFilter(browser) if browser is not None else None
        self.awaiting: list[Item] = []  # built-in calls whose tool has not answered yet

    # -- the token source the Agent samples from ----------------------------------------------------------
    def _source(self, prompt: list[int], params: SamplingParams) -> Iterator[int]:
        self.prompt_lens.append(len(prompt))
        self.sampled.append(0)
        proc = HarmonyConstraint(self.req.constraint) if self.req.constraint is not None else None
        if proc is not None:
            self.constraints.append(proc)
        tokens = self.engine.generate(prompt, params, proc, self.cancel)
        try:
            for tok in tokens:
                self.sampled[-1] += 1
                yield tok
        finally:
            close = getattr(tokens, "close", None)
            if close is not None:
                close()
            if len(self.sampled) == 1:
                self.cached_tokens = int(getattr(tokens, "cached_tokens", 0))

    # -- items ----------------------------------------------------------------------------------------------
    def _open(self, kind: str, name: str | None = None) -> Item:
        item = Item(kind, new_id(PREFIX[kind]), name, new_id("call") if kind == "function_call" else None)
        if kind == "code_interpreter_call":
            item.container_id = self.req.container_id
        self.items.append(item)
        self.current = item
        self.sink(ItemAdded(len(self.items) - 1, item))
        return item

    def _on_header(self, msg: ParsedMessage) -> None:
        self.current = None
        if msg.role != "assistant":
            return
        if msg.recipient is None and msg.channel in ("analysis", "final"):
            self._open("reasoning" if msg.channel == "analysis" else "message")
        elif msg.recipient and msg.recipient.startswith("functions.") and msg.recipient[10:] in self.req.functions:
            self._open("function_call", msg.recipient[10:])
        elif msg.recipient and msg.recipient.split(".", 1)[0] in self.namespaces:
            ns = msg.recipient.split(".", 1)[0]
            self._open(BUILTIN_KINDS[ns], msg.recipient)

    def _delta(self, item: Item | None, text: str) -> None:
        if item is not None and text:
            item.text += text
            self.sink(ItemDelta(self.items.index(item), item, text))

    def _answer(self, item: Item, text: str) -> None:
        """Answer text after the stop filter: through the citation filter when a browser is present."""
        if self.citations is None:
            self._delta(item, text)
            return
        for piece, annotation in self.citations.feed(text, item.text):
            base = len(item.text)
            self._delta(item, piece)
            if annotation is not None:
                annotation["start_index"] += base
                annotation["end_index"] += base
                item.annotations.append(annotation)
                self.sink(ItemAnnotation(self.items.index(item), item, len(item.annotations) - 1, annotation))

    def _on_event(self, ev: object) -> TurnDone | None:
        cur = self.current
        if isinstance(ev, MessageStarted):  # a header closed: the item opens before its first content token
            self._on_header(ev.message)
        elif isinstance(ev, ReasoningDelta):
            self._delta(cur if cur and cur.kind == "reasoning" else None, ev.text)
        elif isinstance(ev, FinalDelta):
            if cur is not None and cur.kind == "message":
                self._answer(cur, self.stopper.feed(ev.text))
                if self.stopper.hit:
                    self.cancel.set()
        elif isinstance(ev, ToolCallArgsDelta):
            if cur is not None and cur.kind in ("function_call", "code_interpreter_call"):
                self._delta(cur, ev.text)
            elif cur is not None and cur.kind == "web_search_call":
                cur.text += ev.text  # browser arguments: no delta event; the action says what it did
        elif isinstance(ev, MessageDone):
            if cur is not None:
                if cur.kind == "message":
                    self._answer(cur, self.stopper.flush())
                    if self.citations is not None:
                        self._delta(cur, self.citations.flush())
                else:
                    cur.text = ev.message.content
                if cur.kind in BUILTIN_KINDS.values() and ev.message.terminator == "call":
                    self.awaiting.append(cur)  # the agent runs the tool next
                    self.current = None
                    self.sink(ItemProgress(self.items.index(cur), cur, "searching"
                                           if cur.kind == "web_search_call" else "interpreting"))
                else:
                    self._close(cur, "completed" if ev.message.terminator or self.stopper.hit else "incomplete")
        elif isinstance(ev, ToolResult):
            ns = (ev.call.recipient or "").split(".", 1)[0]
            item = next((i for i in self.awaiting if i.name == ev.call.recipient), None)
            if ns in self.namespaces and item is not None:
                self.awaiting.remove(item)
                if item.kind == "web_search_call":
                    item.action = self._browser_action(ev.call)
                else:
                    item.outputs = [{"type": "logs", "logs": ev.output}]
                self._close(item, "completed")
        elif isinstance(ev, TurnDone):
            return ev
        return None

    def _browser_action(self, call: ParsedMessage) -> dict[str, Any]:
        """What a browser call did, as a ``web_search_call`` action (the URL from the page it pushed)."""
        verb = (call.recipient or "").split(".", 1)[-1]
        try:
            args = json.loads(call.content) if call.content.strip() else {}
        except json.JSONDecodeError:
            args = {}
        args = args if isinstance(args, dict) else {}
        state = getattr(self.browser, "state", None)
        page = state.page_at(state.current_cursor) if state is not None else None
        if verb == "open":
            url = page.url if page is not None and page.kind != "search" else None
            if url is None and isinstance(args.get("id"), str):
                url = args["id"]
            return {"type": "open_page", "url": url}
        if verb == "find":
            origin = page.origin if page is not None and page.kind == "find" else page
            return {"type": "find_in_page", "pattern": str(args.get("pattern", "")),
                    "url": origin.url if origin is not None else ""}
        action: dict[str, Any] = {"type": "search", "query": str(args.get("query", ""))}
        if page is not None and page.kind == "search":
            action["sources"] = [{"type": "url", "url": u} for u in page.links]
        return action

    def _close(self, item: Item, status: str) -> None:
        item.status = status
        self.current = None
        self.sink(ItemDone(self.items.index(item), item))

    # -- running --------------------------------------------------------------------------------------------
    def run(self) -> TurnResult:
        registry = ToolRegistry(list(self.req.builtins))
        for name in self.req.functions:
            registry.add_function(FunctionTool(name))
        agent = Agent(self._source, registry, self.req.max_tool_rounds)
        done: TurnDone | None = None
        error: dict[str, str] | None = None
        try:
            for ev in agent.run(self.req.messages, self.req.params, self.cancel, prompt=self.req.prompt):
                done = self._on_event(ev) or done
        except EngineBusy as e:
            error = {"code": "rate_limit_exceeded", "message": str(e)}
        except Exception as e:
            log.exception("generation failed")
            error = {"code": "server_error", "message": f"generation failed ({type(e).__name__})"}
        if self.current is not None:
            self._close(self.current, "incomplete")
        for item in self.awaiting:  # the turn ended before the tool answered
            self._close(item, "incomplete")
        self.awaiting = []
        result = self._result(done, error)
        notes = [n for c in self.constraints for n in c.notes] + (done.recoveries if done else [])
        if notes:
            log.warning("turn notes: %s", "; ".join(notes[:20]))
        result.notes = notes
        return result

    def _result(self, done: TurnDone | None, error: dict[str, str] | None) -> TurnResult:
        sampled = sum(self.sampled)
        first = self.prompt_lens[0] if self.prompt_lens else 0
        inputs = max(first, (self.prompt_lens[-1] - sum(self.sampled[:-1])) if self.prompt_lens else 0)
        res = TurnResult("completed", "stop", self.items, inputs, sampled,
                         done.usage.reasoning_tokens if done else 0, self.cached_tokens)
        if error is not None or done is None:
            res.status, res.finish_reason = "failed", "error"
            res.error = error or {"code": "server_error", "message": "generation ended without a result"}
            return res
        reason = done.finish_reason
        if self.stopper.hit or reason == "stop":
            res.finish_reason = "stop"
        elif reason == "tool_calls":
            res.finish_reason = "tool_calls"
        elif reason == "cancelled":
            res.status, res.finish_reason = "cancelled", "cancelled"
        else:  # length, max_tool_rounds
            res.status, res.finish_reason = "incomplete", "length"
            res.incomplete_reason = "max_output_tokens" if reason == "length" else "max_tool_calls"
        if res.status == "completed":
            self._check_output(res, done)
        return res

    def _check_output(self, res: TurnResult, done: TurnDone) -> None:
        grammar = self.req.constraint.final_grammar if self.req.constraint else None
        answers = [i for i in self.items if i.kind == "message"]
        calls = [i for i in self.items if i.kind == "function_call"]
        if grammar and not answers and not calls:
            res.status, res.finish_reason = "failed", "error"
            res.error = {"code": "server_error", "message": "the model ended without the requested JSON answer"}
        elif grammar and answers and not self.stopper.hit and not all(matches_schema(grammar, i.text)
                                                                      for i in answers):
            res.status, res.finish_reason = "failed", "error"
            res.error = {"code": "server_error", "message": "the answer does not match the requested JSON schema"}
        elif not self.items and done.recoveries and res.finish_reason == "stop":
            res.status, res.finish_reason = "failed", "error"
            res.error = {"code": "server_error", "message": "the model's output could not be parsed into an answer"}
