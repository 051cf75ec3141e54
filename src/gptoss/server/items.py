"""Output items of one turn and the events a :class:`~gptoss.server.turn.Turn` reports about them.

Item kinds (SPEC §6.3): ``reasoning``, ``message`` (with ``url_citation`` annotations), ``function_call``,
``web_search_call`` (browser) and ``code_interpreter_call`` (python). Events: :class:`ItemAdded` when the
header reveals the kind, :class:`ItemDelta` per text piece, :class:`ItemAnnotation` when a citation in a
message resolves, :class:`ItemProgress` when a built-in call is complete and its tool starts
(``searching`` / ``interpreting``), :class:`ItemDone` at the end.

:class:`CitationFilter` turns the model's citation markers ``【3†L10-L12】`` into `` ([domain](url))`` plus
an annotation while the answer streams, so the deltas a client accumulates equal the final text and the
annotation offsets index into that text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

PREFIX = {"reasoning": "rs", "message": "msg", "function_call": "fc", "web_search_call": "ws",
          "code_interpreter_call": "ci"}
BUILTIN_KINDS = {"browser": "web_search_call", "python": "code_interpreter_call"}


@dataclass
class Item:
    kind: str  # reasoning | message | function_call | web_search_call | code_interpreter_call
    id: str
    name: str | None = None
    call_id: str | None = None
    text: str = ""  # reasoning/answer text, function arguments, browser arguments or python code
    status: str = "in_progress"
    annotations: list[dict[str, Any]] = field(default_factory=list)
    action: dict[str, Any] | None = None  # web_search_call
    outputs: list[dict[str, Any]] | None = None  # code_interpreter_call
    container_id: str | None = None  # code_interpreter_call

    def to_dict(self, empty: bool = False) -> dict[str, Any]:
        text = "" if empty else self.text
        if self.kind == "reasoning":
            content = [] if empty else [{"type": "reasoning_text", "text": text}]
            return {"id": self.id, "type": "reasoning", "summary": [], "content": content, "status": self.status}
        if self.kind == "message":
            content = [] if empty else [{"type": "output_text", "text": text,
                                         "annotations": list(self.annotations), "logprobs": []}]
            return {"id": self.id, "type": "message", "role": "assistant", "status": self.status, "content": content}
        if self.kind == "web_search_call":
            action = self.action if self.action is not None and not empty else {"type": "search", "query": ""}
            return {"id": self.id, "type": "web_search_call", "status": self.status, "action": action}
        if self.kind == "code_interpreter_call":
            return {"id": self.id, "type": "code_interpreter_call", "status": self.status, "code": text,
                    "container_id": self.container_id or "", "outputs": None if empty else self.outputs}
        return {"id": self.id, "type": "function_call", "call_id": self.call_id, "name": self.name,
                "arguments": text, "status": self.status}


@dataclass
class ItemAdded:
    index: int
    item: Item


@dataclass
class ItemDelta:
    index: int
    item: Item
    delta: str


@dataclass
class ItemAnnotation:
    index: int
    item: Item
    annotation_index: int
    annotation: dict[str, Any]


@dataclass
class ItemProgress:
    index: int
    item: Item
    phase: str  # searching | interpreting


@dataclass
class ItemDone:
    index: int
    item: Item


ItemEvent = ItemAdded | ItemDelta | ItemAnnotation | ItemProgress | ItemDone

# A prefix of a citation marker: held back until it completes or proves not to be one.
_PARTIAL = re.compile(r"【\d*(†(L\d*(-(L\d*)?)?)?)?")
_MAX_MARKER = 40


class CitationFilter:
    """Rewrites citation markers in streamed answer text against a browser's page stack."""

    def __init__(self, browser: Any) -> None:
        from gptoss.tools.browser.citations import CITATION_RE, resolve_citations

        self.browser = browser
        self._re = CITATION_RE
        self._resolve = resolve_citations
        self.buf = ""

    def feed(self, text: str, before: str) -> list[tuple[str, dict[str, Any] | None]]:
        """Pieces of visible text for new ``text``; a piece with an annotation has offsets relative to the
        piece. ``before`` is the answer so far (a rewrite adds a space only where none precedes)."""
        self.buf += text
        out: list[tuple[str, dict[str, Any] | None]] = []
        while self.buf:
            i = self.buf.find("【")
            if i < 0:
                out.append((self.buf, None))
                self.buf = ""
                break
            if i > 0:
                out.append((self.buf[:i], None))
                self.buf = self.buf[i:]
            j = self.buf.find("】")
            if j < 0:
                if len(self.buf) <= _MAX_MARKER and _PARTIAL.fullmatch(self.buf):
                    break  # may still become a citation
                out.append((self.buf[0], None))
                self.buf = self.buf[1:]
                continue
            marker, self.buf = self.buf[:j + 1], self.buf[j + 1:]
            out.append(self._cite(marker, before + "".join(p for p, _ in out)))
        return out

    def _cite(self, marker: str, before: str) -> tuple[str, dict[str, Any] | None]:
        if not self._re.fullmatch(marker):
            return marker, None
        prev = before[-1:]
        try:
            text, annotations = self._resolve(prev + marker, self.browser)
        except Exception:  # citation mapping must never break an answer
            return marker, None
        if not annotations:
            return marker, None
        ann = dict(annotations[0])
        ann["start_index"] -= len(prev)
        ann["end_index"] -= len(prev)
        return text[len(prev):], ann

    def flush(self) -> str:
        out, self.buf = self.buf, ""
        return out
