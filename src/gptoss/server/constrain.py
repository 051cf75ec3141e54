"""Constrained decoding for structured outputs and forced tool calls (SPEC §7), with llguidance.

One :class:`HarmonyConstraint` per generation round is the engine's logits processor. It follows the
sampled tokens with its own :class:`StreamParser` and masks only where the API requires it:

- between messages only ``<|start|>`` is allowed (the harmony grammar, not a content constraint);
- headers and ``analysis`` content are free, except under a forced ``tool_choice`` (required / named):
  then every header must be ``<|channel|>analysis<|message|>`` or a call header
  ``...<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>`` (after an analysis message:
  only the call), and analysis content may not stop the round (``<|end|>`` is its only control token);
- ``final`` content with a JSON format requested follows the schema's grammar; ``<|return|>`` is
  allowed only in accept states;
- a call to a strict (or forced) function follows its parameter schema; ``<|call|>`` only at accept.

A grammar that does not compile is logged and dropped (unconstrained output, validated afterwards).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache

import numpy as np
import torch

from gptoss.harmony.parser import ParsedMessage, StreamParser
from gptoss.tokenizer import N_MERGEABLE, SPECIAL_TOKENS, VOCAB_SIZE, o200k_harmony

log = logging.getLogger("gptoss.server")

RETURN, CALL, END = SPECIAL_TOKENS["<|return|>"], SPECIAL_TOKENS["<|call|>"], SPECIAL_TOKENS["<|end|>"]
START = SPECIAL_TOKENS["<|start|>"]
# Compact JSON: no whitespace runs for a sampler to get lost in (gpt-oss writes compact arguments).
JSON_OPTIONS = {"whitespace_flexible": False}
NO_PARAMETERS = {"type": "object", "properties": {}, "additionalProperties": False}


@cache
def ll_tokenizer():
    """llguidance's view of o200k_harmony, built offline from the shipped vocabulary (~1 s, once)."""
    from llguidance.tiktoken import lltokenizer_from_encoding

    return lltokenizer_from_encoding(o200k_harmony(), n_vocab=VOCAB_SIZE, eos_token=RETURN)


def compile_schema(schema: dict) -> str | None:
    """An llguidance grammar for a JSON schema, or None (logged) when llguidance cannot handle it."""
    import llguidance

    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, overrides=JSON_OPTIONS)
        is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, ll_tokenizer())
    except Exception as e:  # bad schema object
        log.warning("JSON schema not usable for constrained decoding: %s", e)
        return None
    if is_error:
        log.warning("JSON schema not usable for constrained decoding: %s", "; ".join(messages))
        return None
    return grammar


def _keep_sampleable(masked: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``masked`` unless every allowed token has -inf logits -- a model with a trimmed vocabulary never produces
    tokens outside its kept set, and the grammar may allow only such tokens here (e.g. one spelling of a key).
    Then the allowed tokens are drawn uniformly, so the output still follows the grammar."""
    if bool(torch.isfinite(masked).any()):
        return masked
    return torch.zeros_like(masked).masked_fill(~mask, float("-inf"))


def matches_schema(grammar: str, text: str) -> bool:
    """Whether ``text`` is a complete sentence of ``grammar`` (used to validate unconstrained output)."""
    import llguidance

    m = llguidance.LLMatcher(ll_tokenizer(), grammar, log_level=0)
    return m.consume_tokens(o200k_harmony().encode_ordinary(text)) and m.is_accepting()


def current_message(parser: StreamParser) -> ParsedMessage | None:
    """The message whose content the parser is inside (header closed, no terminator yet), else None.
    Reads the parser's state: constrained decoding is driven by it, never by scanning text."""
    return parser._msg  # with between_messages, the one place that looks inside the parser


def between_messages(parser: StreamParser) -> bool:
    """After a message's terminator, before the next header: harmony allows only ``<|start|>`` here."""
    return parser._state.name == "BETWEEN"


@dataclass(frozen=True)
class ConstraintSpec:
    """What a request constrains. Grammars are compiled once per request (``compile_schema``)."""

    final_grammar: str | None = None  # text.format / response_format
    function_grammars: dict[str, str] = field(default_factory=dict)  # strict or forced functions
    forced: tuple[str, ...] = ()  # tool_choice required (all names) / named (one)
    # With a JSON answer format: the headers the model may write (None: free, e.g. with built-in tools whose
    # header forms vary). Names of the declared functions it may call instead of answering.
    header_functions: tuple[str, ...] | None = None

    @property
    def active(self) -> bool:
        return bool(self.final_grammar or self.function_grammars or self.forced)


@cache
def _encode_header(text: str) -> tuple[int, ...]:
    from gptoss.harmony.render import harmony_encoding

    return tuple(harmony_encoding().encode(text, allowed_special="all"))


def call_header(name: str, after_message: bool) -> tuple[int, ...]:
    start = "<|start|>assistant" if after_message else ""
    return _encode_header(f"{start}<|channel|>commentary to=functions.{name} <|constrain|>json<|message|>")


class HarmonyConstraint:
    """A logits processor for one generation round (see the module docstring)."""

    def __init__(self, spec: ConstraintSpec) -> None:
        import llguidance

        self._ll = llguidance
        self.spec = spec
        self.parser = StreamParser()
        self.seen = 0
        self.msg: ParsedMessage | None = None
        self.matcher = None
        self.terminator: int | None = None
        self.plan: list[tuple[int, ...]] | None = None  # candidate forced headers
        self.plan_prefix: list[int] = []
        self.notes: list[str] = []
        self.mask_seconds = 0.0  # grammar mask time (llguidance only)
        self.mask_count = 0
        self._bitmask = np.full((1, (VOCAB_SIZE + 31) // 32), -1, dtype=np.int32)
        if spec.forced or self._plans_headers:
            self._start_plan(after_message=False)

    # -- the processor ------------------------------------------------------------------------------
    def __call__(self, tokens: Sequence[int], logits: torch.Tensor) -> torch.Tensor:
        for t in tokens[self.seen:]:
            self._advance(int(t))
        self.seen = len(tokens)
        allowed = self._allowed()
        if allowed is None:
            return logits
        if isinstance(allowed, np.ndarray):
            if not allowed.any():
                self.notes.append("grammar allowed no token; unconstrained step")
                return logits
            mask = torch.from_numpy(allowed).to(logits.device, non_blocking=True)
            return _keep_sampleable(logits.masked_fill(~mask, float("-inf")), mask)
        out = torch.full_like(logits, float("-inf"))
        idx = torch.tensor(sorted(allowed), device=logits.device)
        out[idx] = logits[idx]
        mask = torch.zeros_like(logits, dtype=torch.bool)
        mask[idx] = True
        return _keep_sampleable(out, mask)

    # -- state --------------------------------------------------------------------------------------
    @property
    def _plans_headers(self) -> bool:
        return bool(self.spec.final_grammar) and self.spec.header_functions is not None

    def _start_plan(self, after_message: bool) -> None:
        if not self.spec.forced:  # a JSON answer: analysis, the final answer, or a declared call
            start = "<|start|>assistant" if after_message else ""
            cands = [_encode_header(f"{start}<|channel|>{c}<|message|>") for c in ("analysis", "final")]
            cands += [call_header(n, after_message) for n in self.spec.header_functions or ()]
            self.plan, self.plan_prefix = cands, []
            return
        cands = [call_header(n, after_message) for n in self.spec.forced]
        if not after_message and not self._analysis_seen():
            cands.append(_encode_header("<|channel|>analysis<|message|>"))  # never skip reasoning
        self.plan, self.plan_prefix = cands, []

    def _analysis_seen(self) -> bool:
        return any(m.channel == "analysis" and m.recipient is None for m in self.parser.messages)

    def _advance(self, t: int) -> None:
        if self.plan is not None:
            self.plan_prefix.append(t)
            k = len(self.plan_prefix)
            self.plan = [c for c in self.plan if c[:k] == tuple(self.plan_prefix)]
            if not self.plan:
                self.notes.append("forced header abandoned (token outside the plan)")
                self.plan = None
            elif any(len(c) == k for c in self.plan):
                self.plan = None
        if self.matcher is not None and t != self.terminator and t < N_MERGEABLE:
            if not self.matcher.consume_token(t):
                self._drop_matcher(f"grammar rejected token {t}: {self.matcher.get_error()}")
        self.parser.feed(t)
        msg = current_message(self.parser)
        if msg is self.msg:
            return
        if self.msg is not None:  # the message we were in has ended
            self.matcher, self.terminator = None, None
            if self.spec.forced and msg is None and self.plan is None and not self._call_done():
                self._start_plan(after_message=True)
            elif self._plans_headers and msg is None and self.plan is None:
                self._start_plan(after_message=True)
        self.msg = msg
        if msg is not None and msg.role == "assistant":
            self._open(msg)

    def _call_done(self) -> bool:
        return any(m.is_tool_call for m in self.parser.messages)

    def _open(self, msg: ParsedMessage) -> None:
        grammar, term = None, None
        if msg.recipient is None and msg.channel == "final" and self.spec.final_grammar:
            grammar, term = self.spec.final_grammar, RETURN
        elif msg.recipient and msg.recipient.startswith("functions."):
            grammar, term = self.spec.function_grammars.get(msg.recipient[len("functions."):]), CALL
        if grammar is None:
            return
        m = self._ll.LLMatcher(ll_tokenizer(), grammar, log_level=0)
        if m.is_error():
            self.notes.append(f"grammar error: {m.get_error()}")
            return
        self.matcher, self.terminator = m, term

    def _drop_matcher(self, why: str) -> None:
        self.notes.append(why)
        log.warning("constrained decoding: %s; continuing unconstrained", why)
        self.matcher, self.terminator = None, None

    def _allowed(self) -> np.ndarray | set[int] | None:
        if self.plan is not None:
            k = len(self.plan_prefix)
            return {c[k] for c in self.plan}
        if self.matcher is not None:
            return self._grammar_mask()
        msg = self.msg
        if msg is None and between_messages(self.parser):
            # Only <|start|> is valid harmony here. A small model's stray text would otherwise open an implicit
            # final message whose first token escaped the schema (the parser tolerates it; a grammar cannot).
            return {START}
        if ((self.spec.forced or self._plans_headers) and msg is not None and msg.channel == "analysis"
                and msg.recipient is None):
            allowed = np.zeros(VOCAB_SIZE, dtype=bool)  # free text; the round may not end here
            allowed[:N_MERGEABLE] = True
            allowed[END] = True  # <|return|>/<|call|> would end the round without the answer or call
            return allowed
        return None

    def _grammar_mask(self) -> np.ndarray:
        assert self.matcher is not None and self.terminator is not None
        t0 = time.perf_counter()
        if self.matcher.is_stopped():
            allowed = np.zeros(VOCAB_SIZE, dtype=bool)
        else:
            self.matcher.unsafe_compute_mask_ptr(self._bitmask.ctypes.data, self._bitmask.nbytes)
            allowed = np.unpackbits(self._bitmask.view(np.uint8), bitorder="little")[:VOCAB_SIZE].astype(bool)
            allowed[N_MERGEABLE:] = False  # no control token inside JSON
        if self.matcher.is_accepting():
            allowed[self.terminator] = True
        self.mask_seconds += time.perf_counter() - t0
        self.mask_count += 1
        return allowed
