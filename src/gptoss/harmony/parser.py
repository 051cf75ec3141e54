"""Tolerant streaming parser for sampled harmony completions (SPEC §4.2, §4.5, §4.8).

The completion starts right after the prompt's ``<|start|>assistant``, so the parser begins
inside a header whose role is already known. Tokens arrive one at a time; ``feed`` returns the
events they complete. Malformed output is recovered from (one note per quirk in ``recoveries``),
never raised on, and no control token or its literal text ever reaches an event's text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum, auto

from openai_harmony import Author, Message, Role, TextContent

from gptoss.tokenizer import CONTROL_TOKENS, N_MERGEABLE, SPECIAL_TOKENS, IncrementalDecoder, Tokenizer, get_tokenizer

START, END, MESSAGE = SPECIAL_TOKENS["<|start|>"], SPECIAL_TOKENS["<|end|>"], SPECIAL_TOKENS["<|message|>"]
CHANNEL, CONSTRAIN = SPECIAL_TOKENS["<|channel|>"], SPECIAL_TOKENS["<|constrain|>"]
CALL, RETURN, EOS = SPECIAL_TOKENS["<|call|>"], SPECIAL_TOKENS["<|return|>"], SPECIAL_TOKENS["<|endoftext|>"]
TERMINATORS = {END: "end", CALL: "call", RETURN: "return"}
CHANNELS = ("analysis", "commentary", "final")
BARE_CONTENT_TYPES = ("json", "code")
_NAMES = {v: k for k, v in SPECIAL_TOKENS.items()}

_LITERAL_RE = re.compile("|".join(re.escape(t) for t in CONTROL_TOKENS))
# Proper prefixes of the literals: text ending in one of these may still grow into a literal.
_PREFIXES = frozenset(t[:i] for t in CONTROL_TOKENS for i in range(1, len(t)))
_MAX_PREFIX = max(len(t) for t in CONTROL_TOKENS) - 1


def sanitize_text(text: str) -> str:
    """Remove literal control-token strings, repeatedly: deleting one may join two halves of another."""
    while True:
        cleaned = _LITERAL_RE.sub("", text)
        if cleaned == text:
            return cleaned
        text = cleaned


@dataclass
class ParsedMessage:
    role: str
    channel: str | None
    recipient: str | None
    content_type: str | None
    content: str
    tokens: list[int] = field(default_factory=list)
    terminator: str | None = None

    @property
    def is_tool_call(self) -> bool:
        # A hallucinated tool-result turn ("<|start|>functions.x to=assistant") is no call.
        return self.recipient is not None and self.role == "assistant"

    def to_harmony(self) -> Message:
        """The message as openai-harmony renders it into history (``<|constrain|>json`` for json)."""
        roles = {r.value for r in Role}
        author = Author(role=Role(self.role)) if self.role in roles else Author(role=Role.TOOL, name=self.role)
        content_type = "<|constrain|>json" if self.content_type == "json" else self.content_type
        return Message(author=author, content=[TextContent(text=self.content)], channel=self.channel,
                       recipient=self.recipient, content_type=content_type)


@dataclass(frozen=True)
class ReasoningDelta:
    text: str


@dataclass(frozen=True)
class FinalDelta:
    text: str


@dataclass(frozen=True)
class CommentaryDelta:
    text: str


@dataclass(frozen=True)
class MessageStarted:
    """A header closed: ``message`` (content still empty) is the one the following deltas belong to.
    Emitted for every message, hallucinated roles included, so a consumer can open an output item the
    moment its kind is known without running a second parser."""

    message: ParsedMessage


@dataclass(frozen=True)
class ToolCallStarted:
    recipient: str
    channel: str | None
    content_type: str | None


@dataclass(frozen=True)
class ToolCallArgsDelta:
    recipient: str
    text: str


@dataclass(frozen=True)
class MessageDone:
    message: ParsedMessage


Event = (ReasoningDelta | FinalDelta | CommentaryDelta | MessageStarted | ToolCallStarted | ToolCallArgsDelta
         | MessageDone)


class _LiteralFilter:
    """Streaming ``sanitize_text``: the concatenated output equals ``sanitize_text`` of the input.

    Held back is the longest tail that is a chain of literal prefixes ("<|e" + "<|"): completing
    the last one and deleting it can join the one before it into a literal ("<|e" + "nd|>")."""

    def __init__(self) -> None:
        self._held = ""

    def feed(self, text: str) -> str:
        s = sanitize_text(self._held + text)
        chain = [False] * len(s) + [True]  # chain[i]: s[i:] is a chain of literal prefixes
        cut = len(s)
        for i in range(len(s) - 1, -1, -1):
            if s[i] == "<":
                chain[i] = any(chain[j] for j in range(i + 1, min(len(s), i + _MAX_PREFIX) + 1)
                               if s[i:j] in _PREFIXES)
                if chain[i]:
                    cut = i
        self._held = s[cut:]
        return s[:cut]

    def flush(self) -> str:
        out, self._held = sanitize_text(self._held), ""
        return out


class _State(Enum):
    HEADER = auto()   # collecting header tokens up to <|message|>
    CONTENT = auto()  # inside a message body
    BETWEEN = auto()  # after a terminator, expecting <|start|>
    DONE = auto()     # after <|endoftext|> or finish()


@dataclass
class _Header:
    explicit_start: bool  # opened by <|start|>: its first word names the role
    segments: list[tuple[str, list[int]]]  # ("start" | "channel" | "constrain", text token ids)
    tokens: list[int] = field(default_factory=list)
    tentative: bool = False  # a bare role word after <|end|>: a header only if <|channel|>/<|message|> follow


class StreamParser:
    def __init__(self, tokenizer: Tokenizer | None = None, role: str = "assistant") -> None:
        self.tok = tokenizer or get_tokenizer()
        self.role = role
        self.messages: list[ParsedMessage] = []
        self.recoveries: list[str] = []
        self._pos = -1  # index of the token being fed, for recovery notes
        self._state = _State.HEADER
        self._header = _Header(explicit_start=False, segments=[("start", [])])
        self._msg: ParsedMessage | None = None
        self._decoder = IncrementalDecoder(self.tok)
        self._filter = _LiteralFilter()
        self._visible = True

    def _note(self, what: str) -> None:
        self.recoveries.append(f"token {self._pos}: {what}")

    # -- public API -------------------------------------------------------------------------------
    def feed(self, token: int) -> list[Event]:
        self._pos += 1
        try:
            return self._dispatch(token)
        except Exception as e:  # a parser bug must not kill the stream: note it and go on
            self._note(f"internal error {e!r}; token dropped")
            return []

    def finish(self) -> list[Event]:
        if self._state is _State.DONE:
            return []
        events: list[Event] = []
        if self._state is _State.CONTENT:
            events = self._close(None)
        elif self._state is _State.HEADER and self._header.tokens:
            if self._header.tentative:  # the lone role word was text after all
                events = self._tentative_to_text() + self._close(None)
            else:
                self._note("stream ended inside a header; partial header dropped")
        self._state = _State.DONE
        return events

    # -- dispatch ---------------------------------------------------------------------------------
    def _dispatch(self, token: int) -> list[Event]:
        if self._state is _State.DONE:
            if not self.recoveries or "after end of stream" not in self.recoveries[-1]:
                self._note("tokens after end of stream ignored")  # once, not once per token
            return []
        if token == EOS:
            return self.finish()
        if self._state is _State.HEADER:
            return self._in_header(token)
        if self._state is _State.CONTENT:
            return self._in_content(token)
        return self._between(token)

    def _between(self, token: int) -> list[Event]:
        if token == START:
            self._open_header(token, explicit=True)
        elif token == CHANNEL:
            self._note("<|channel|> without <|start|>; new assistant header")
            self._open_header(token, explicit=False)
            self._header.segments.append(("channel", []))
        elif token == MESSAGE:
            self._note("<|message|> without a header; implicit final message")
            return self._open_content(self.role, "final", None, None, [token])
        elif not _is_text(token):
            self._note(f"stray {self._name(token)} between messages ignored")
        elif not self.tok.decode([token]).strip():
            self._note("whitespace between messages dropped")  # an empty final message would be noise
        elif self.tok.decode([token]).strip() == self.role:
            self._open_header(token, explicit=True)  # "<|end|>assistant<|channel|>…": lost <|start|>
            self._header.tentative = True
            self._header.segments[0][1].append(token)
        else:
            self._note("text after a message; implicit final message")
            return self._open_content(self.role, "final", None, None, []) + self._in_content(token)
        return []

    def _in_header(self, token: int) -> list[Event]:
        hdr = self._header
        if hdr.tentative and token not in (CHANNEL, MESSAGE, CONSTRAIN):
            return self._tentative_to_text() + self._dispatch(token)
        if hdr.tentative:
            hdr.tentative = False
            self._note(f"header without <|start|> (bare {self.role!r} after a message)")
        if token == MESSAGE:
            hdr.tokens.append(token)
            return self._close_header()
        if token in (CHANNEL, CONSTRAIN):
            hdr.tokens.append(token)
            hdr.segments.append(("channel" if token == CHANNEL else "constrain", []))
        elif token == START:
            if hdr.tokens:
                self._note("<|start|> inside a header; partial header dropped")
            self._open_header(token, explicit=True)
        elif token in TERMINATORS:
            if hdr.tokens:
                self._note(f"{self._name(token)} inside a header; partial header dropped")
            else:
                self._note(f"stray {self._name(token)} ignored")
            self._state = _State.BETWEEN
        elif _is_text(token):
            hdr.tokens.append(token)
            hdr.segments[-1][1].append(token)
        else:
            hdr.tokens.append(token)
            self._note(f"{self._name(token)} inside a header dropped")
        return []

    def _in_content(self, token: int) -> list[Event]:
        assert self._msg is not None
        if token in TERMINATORS:
            self._msg.tokens.append(token)
            return self._close(TERMINATORS[token])
        if token in (START, CHANNEL):
            # The model began a new message without ending this one.
            self._note(f"{self._name(token)} inside content; implicit end of message")
            events = self._close(None)
            self._open_header(token, explicit=token == START)
            if token == CHANNEL:
                self._header.segments.append(("channel", []))
            return events
        self._msg.tokens.append(token)
        if not _is_text(token):
            self._note(f"{self._name(token)} inside content dropped")
            return []
        return self._deltas(self._filter.feed(self._decoder.feed(token)))

    # -- helpers ----------------------------------------------------------------------------------
    def _open_header(self, token: int, explicit: bool) -> None:
        self._state = _State.HEADER
        self._header = _Header(explicit_start=explicit, segments=[("start", [])], tokens=[token])

    def _tentative_to_text(self) -> list[Event]:
        """Turn a held-back lone role word into the start of an implicit final message."""
        self._note("text after a message; implicit final message")
        held = self._header.tokens
        events = self._open_content(self.role, "final", None, None, [])
        for t in held:
            events += self._in_content(t)
        return events

    def _close_header(self) -> list[Event]:
        hdr = self._header
        segments = [(kind, self.tok.decode(ids)) for kind, ids in hdr.segments]
        role, channel, recipient, content_type, notes = _parse_header(segments, self.role, hdr.explicit_start)
        for n in notes:
            self._note(n)
        events = self._open_content(role, channel, recipient, content_type, hdr.tokens)
        if recipient is not None and self._visible:
            events.append(ToolCallStarted(recipient, channel, content_type))
        return events

    def _open_content(self, role: str, channel: str, recipient: str | None, content_type: str | None,
                      tokens: list[int]) -> list[Event]:
        self._state = _State.CONTENT
        self._msg = ParsedMessage(role, channel, recipient, content_type, "", list(tokens))
        self._decoder = IncrementalDecoder(self.tok)
        self._filter = _LiteralFilter()
        # Hallucinated turns of other roles (a fake user or tool message) are never streamed.
        self._visible = role == self.role
        if not self._visible:
            self._note(f"message from role {role!r} not streamed")
        return [MessageStarted(self._msg)]

    def _close(self, terminator: str | None) -> list[Event]:
        msg = self._msg
        assert msg is not None
        events = self._deltas(self._filter.feed(self._decoder.flush()) + self._filter.flush())
        msg.terminator = terminator
        if msg.is_tool_call and terminator != "call":
            self._note(f"tool call to {msg.recipient} ended by {terminator or 'end of stream'}, not <|call|>")
        self.messages.append(msg)
        self._msg = None
        self._state = _State.BETWEEN
        return [*events, MessageDone(msg)]

    def _deltas(self, text: str) -> list[Event]:
        msg = self._msg
        if not text or msg is None:
            return []
        msg.content += text
        if not self._visible:
            return []
        if msg.recipient is not None:  # route by recipient, not channel (calls on analysis happen)
            return [ToolCallArgsDelta(msg.recipient, text)]
        if msg.channel == "analysis":
            return [ReasoningDelta(text)]
        if msg.channel == "commentary":
            return [CommentaryDelta(text)]
        return [FinalDelta(text)]

    @staticmethod
    def _name(token: int) -> str:
        return _NAMES.get(token, f"token id {token}")


def _is_text(token: int) -> bool:
    return 0 <= token < N_MERGEABLE


def _parse_header(segments: list[tuple[str, str]], default_role: str, explicit_start: bool
                  ) -> tuple[str, str, str | None, str | None, list[str]]:
    """(role, channel, recipient, content_type, notes) from the decoded header segments."""
    role, channel, recipient, content_type = default_role, None, None, None
    seen_recipient = False
    notes: list[str] = []
    for kind, text in segments:
        words = text.split()
        if kind == "start" and explicit_start and words and not words[0].startswith("to="):
            role = words.pop(0)
        if kind == "constrain":
            if words and content_type is None:
                content_type = words.pop(0)
            elif not words:
                notes.append("empty <|constrain|> in header ignored")
        for word in words:
            if word.startswith("to="):
                if seen_recipient:
                    notes.append(f"second recipient {word!r} in header ignored")
                    continue
                seen_recipient = True
                recipient = word[3:] if word[3:] not in ("", "all") else None
            elif word in BARE_CONTENT_TYPES and content_type is None:
                content_type = word
            elif kind == "channel" and channel is None and word in CHANNELS:
                channel = word
            elif kind == "channel" and channel is None and (prefix := _channel_prefix(word)):
                channel = prefix
                notes.append(f"garbled channel {word!r} read as {prefix!r}")
            else:
                notes.append(f"header junk {word!r} ignored")
    if channel is None:
        # Refusals come without a channel; a channel-less call goes where SPEC §4.5 puts its kind.
        if recipient is None:
            channel = "final"
        else:
            channel = "commentary" if recipient.startswith("functions.") else "analysis"
        notes.append(f"no valid channel in header; treated as {channel!r}")
    return role, channel, recipient, content_type, notes


def _channel_prefix(word: str) -> str | None:
    return next((c for c in CHANNELS if word.startswith(c)), None)


def parse_completion(tokens: list[int], tokenizer: Tokenizer | None = None
                     ) -> tuple[list[ParsedMessage], list[str]]:
    """Parse a whole completion (tokens after the prompt's ``<|start|>assistant``)."""
    parser = StreamParser(tokenizer)
    for t in tokens:
        parser.feed(t)
    parser.finish()
    return parser.messages, parser.recoveries
