"""Continuous batching: sequences join and leave a running batch between decode steps.

:class:`ContinuousBatch` keeps one KV cache whose batch dimension is exactly the live sequences. New
sequences are prefilled as a group in their own cache, one chunk per :meth:`ContinuousBatch.advance`
(so a long prompt does not stall the streams already decoding), then spliced into the batch cache; a
sequence that finishes or is dropped is cut out of it before the next forward. Each ``advance`` runs
at most one prefill chunk and one decode step (one token for every live sequence, one forward).

A group whose prompts share a preamble (the system message, the developer message, an earlier conversation:
whole messages only) starts from a :class:`~gptoss.engine.prefix.PrefixCache` state of it; on a miss the
preamble is run once, for one row, stored, and copied into every row of the group. A group left with at most
``FEED_TOKENS`` prompt tokens to run joins the decode batch at once, and those tokens are fed one per decode step.

Splicing works on the cache tensors directly (``k``, ``v``, ``pos``, ``lengths`` per row): ring caches
of one model share a capacity, growing caches are padded to the larger capacity first.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from gptoss.engine.generate import DEFAULT_PREFILL_CHUNK, check_tokens
from gptoss.engine.prefix import (
    DEFAULT_MAX_BYTES,
    MAX_CUTS,
    MIN_PREFIX,
    PrefixCache,
    boundaries,
    common_prefix,
    repeat_rows,
)
from gptoss.engine.sampling import LogitsProcessor, SamplingParams, filter_logits
from gptoss.model.cache import FullKVCache, KVCache, make_cache
from gptoss.model.transformer import Transformer


@dataclass(eq=False)
class Seq:
    """One sequence in the batch. ``tag`` is the caller's handle; ``finish_reason`` is set on its last token."""

    prompt: list[int]
    params: SamplingParams
    processor: LogitsProcessor | None = None
    tag: Any = None
    generated: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    generator: torch.Generator | None = None  # None: greedy
    length: int = 0  # tokens in the cache (prompt + fed tokens)
    dropped: bool = False
    cached_tokens: int = 0  # prompt tokens taken from the prefix cache, not recomputed
    pending: list[int] = field(default_factory=list)  # prompt tokens still to feed through decode steps


@dataclass
class SeqEvent:
    """``seq`` sampled ``token``; ``finish_reason`` ("stop" / "length") on its last token."""

    seq: Seq
    token: int
    finish_reason: str | None = None


# A joining group with at most this many prompt tokens left to run (after its cached preamble) skips the
# prefill forward: it joins the decode batch at once and its tokens are fed one per decode step, each costing
# a decode row instead of a forward pass of its own (prompts that repeat an earlier one up to its last
# message, e.g. retries and samples of one conversation, leave only "<|start|>assistant").
FEED_TOKENS = 4


@dataclass
class _Prefill:
    seqs: list[Seq]
    cache: list[KVCache]
    done_to: int = 0  # prompt tokens already run
    logits: torch.Tensor | None = None


def _resize_full(c: FullKVCache, capacity: int) -> None:
    """Grow a growing cache to ``capacity`` slots (plus its scratch slot)."""
    if c.capacity >= capacity:
        return
    b, _, n_kv, d = c.k.shape
    pad = capacity - c.capacity
    c.k = torch.cat([c.k[:, :-1], c.k.new_zeros(b, pad + 1, n_kv, d)], dim=1)
    c.v = torch.cat([c.v[:, :-1], c.v.new_zeros(b, pad + 1, n_kv, d)], dim=1)
    c.pos = torch.cat([c.pos[:, :-1], c.pos.new_full((b, pad + 1), -1)], dim=1)


def concat_caches(a: list[KVCache], b: list[KVCache]) -> list[KVCache]:
    """Per-layer caches holding the rows of ``a`` then the rows of ``b``."""
    out = []
    for ca, cb in zip(a, b, strict=True):
        if isinstance(ca, FullKVCache):
            cap = max(ca.capacity, cb.capacity)
            _resize_full(ca, cap)
            _resize_full(cb, cap)  # type: ignore[arg-type]
        elif ca.capacity != cb.capacity:
            raise ValueError(f"ring caches of capacities {ca.capacity} and {cb.capacity} cannot be joined")
        c = copy.copy(ca)
        c.k, c.v = torch.cat([ca.k, cb.k]), torch.cat([ca.v, cb.v])
        c.pos, c.lengths = torch.cat([ca.pos, cb.pos]), torch.cat([ca.lengths, cb.lengths])
        out.append(c)
    return out


def select_rows(caches: list[KVCache], rows: torch.Tensor) -> list[KVCache]:
    out = []
    for c in caches:
        n = copy.copy(c)
        n.k, n.v, n.pos, n.lengths = c.k[rows], c.v[rows], c.pos[rows], c.lengths[rows]
        out.append(n)
    return out


class ContinuousBatch:
    """A running decode batch that sequences join (:meth:`add`) and leave (finished or :meth:`drop`)."""

    def __init__(self, model: Transformer, prefill_chunk: int = DEFAULT_PREFILL_CHUNK,
                 prefix_cache_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.model = model
        self.cfg = model.config
        self.device = model.embedding.weight.device
        self.dtype = model.embedding.weight.dtype
        self.prefill_chunk = prefill_chunk
        # A trimmed vocabulary is sampled over its kept ids only (column i is token kept[i]); logits
        # processors still see full-vocabulary rows.
        self.vocab = model.vocab
        self._kept_ids: list[int] | None = None if model.vocab is None else model.vocab.kept.tolist()
        self.rows: list[Seq] = []  # live, each with a row of self.logits to sample from
        self.cache: list[KVCache] | None = None
        self.logits: torch.Tensor | None = None
        self.waiting: list[Seq] = []  # added, not yet prefilling
        self.prefilling: _Prefill | None = None
        self.step_sizes: list[int] = []  # rows in each decode forward (observability, tests)
        self.prefixes = PrefixCache(prefix_cache_bytes) if prefix_cache_bytes > 0 else None

    def __len__(self) -> int:
        """Sequences in the batch, waiting or prefilling included."""
        return len(self.rows) + len(self.waiting) + (len(self.prefilling.seqs) if self.prefilling else 0)

    @property
    def idle(self) -> bool:
        return len(self) == 0

    def add(self, prompt: Sequence[int], params: SamplingParams, processor: LogitsProcessor | None = None,
            tag: Any = None) -> Seq:
        seq = Seq(check_tokens(prompt, self.cfg.vocab_size), params, processor, tag)
        if params.temperature > 0:
            seq.generator = torch.Generator()
            if params.seed is None:
                seq.generator.seed()
            else:
                seq.generator.manual_seed(params.seed)
        self.waiting.append(seq)
        return seq

    def drop(self, seq: Seq) -> None:
        """Stop ``seq``: it samples nothing more and leaves the batch at the next step."""
        seq.dropped = True

    def all_sequences(self) -> list[Seq]:
        return self.rows + self.waiting + (self.prefilling.seqs if self.prefilling else [])

    def reset(self) -> list[Seq]:
        """Forget everything (after a failed forward); returns the sequences that were in the batch."""
        seqs = self.all_sequences()
        self.rows, self.waiting, self.prefilling, self.cache, self.logits = [], [], None, None, None
        if self.prefixes is not None:
            self.prefixes.clear()
        return seqs

    # -- one step -------------------------------------------------------------------------------------
    @torch.inference_mode()
    def advance(self) -> list[SeqEvent]:
        """One prefill chunk for the joining group (if any), then one decode step for the live rows."""
        self._purge_waiting()
        ran = False  # this step's prefill forward is spent
        if self.prefilling is None and self.waiting:
            group, self.waiting = self.waiting, []
            self.prefilling, ran = self._start_group(group)
            if max(len(s.prompt) for s in group) - self.prefilling.done_to <= FEED_TOKENS:
                self._join(self.prefilling, pending=True)
        if self.prefilling is not None and not ran:
            self._prefill_chunk(self.prefilling)
        return self._decode()

    def _start_group(self, group: list[Seq]) -> tuple[_Prefill, bool]:
        """The group's prefill state, started from its shared preamble when there is one; True when running
        that preamble took this step's prefill forward."""
        b = len(group)
        prompt = group[0].prompt
        shared = self._shared_preamble([s.prompt for s in group])
        if self.prefixes is None or shared < MIN_PREFIX:
            return _Prefill(group, make_cache(self.cfg, b, self.dtype, self.device)), False
        hit, state = self.prefixes.lookup(prompt, shared)
        ran = hit < shared and shared - hit <= self.prefill_chunk
        if ran:
            # Stored at each message boundary on the way (a few), so a later prompt that shares only the
            # system message, or system + developer, still finds its preamble.
            cuts = [n for n in reversed(boundaries(prompt, shared)) if n > hit]
            if len(cuts) > MAX_CUTS:
                cuts = cuts[:MAX_CUTS - 1] + cuts[-1:]
            start = hit
            for n in cuts:
                state = self._run_prefix(state, prompt, start, n)
                self.prefixes.store(prompt[:n], state)
                start = n
        if state is None:  # nothing stored, and too long to run as one chunk: the usual chunked prefill
            return _Prefill(group, make_cache(self.cfg, b, self.dtype, self.device)), False
        for s in group:
            s.cached_tokens = hit
        return _Prefill(group, repeat_rows(state, b), done_to=shared if ran else hit), ran

    @staticmethod
    def _shared_preamble(prompts: list[list[int]]) -> int:
        """The longest whole-message prefix all ``prompts`` share, leaving each at least one token to run."""
        limit = min(common_prefix(prompts), min(len(p) for p in prompts) - 1)
        return next(iter(boundaries(prompts[0], limit)), 0)

    def _run_prefix(self, state: list[KVCache] | None, prompt: list[int], start: int, end: int) -> list[KVCache]:
        """A one-row cache holding ``prompt[:end]``: ``state`` (holding ``prompt[:start]``) extended."""
        cache = repeat_rows(state, 1) if state is not None else make_cache(self.cfg, 1, self.dtype, self.device)
        tokens = torch.tensor([prompt[start:end]], dtype=torch.long, device=self.device)
        positions = torch.arange(start, end, device=self.device)[None]
        self.model(tokens, positions, cache, torch.tensor([end - start - 1], device=self.device), return_hidden=True)
        return cache

    def _purge_waiting(self) -> None:
        self.waiting = [s for s in self.waiting if not s.dropped]

    def _prefill_chunk(self, p: _Prefill) -> None:
        lengths = [len(s.prompt) for s in p.seqs]
        longest, c0 = max(lengths), p.done_to
        c1 = min(c0 + self.prefill_chunk, longest)
        b = len(p.seqs)
        tokens = torch.zeros(b, c1 - c0, dtype=torch.long)
        positions = torch.full((b, c1 - c0), -1, dtype=torch.long)
        for r, s in enumerate(p.seqs):
            part = s.prompt[c0:c1]
            if part:
                tokens[r, :len(part)] = torch.tensor(part)
                positions[r, :len(part)] = torch.arange(c0, c0 + len(part))
        last = torch.tensor(lengths) - 1
        index = (last - c0).clamp(0, c1 - c0 - 1)
        out = self.model(tokens.to(self.device), positions.to(self.device), p.cache, index.to(self.device),
                         kept_logits=True)
        here = ((last >= c0) & (last < c1)).to(self.device)
        p.logits = out if p.logits is None else torch.where(here[:, None], out, p.logits)
        p.done_to = c1
        if c1 < longest:
            return
        for s, n in zip(p.seqs, lengths, strict=True):
            s.length = n
        self._join(p, pending=False)

    def _join(self, p: _Prefill, pending: bool) -> None:
        """Splice a group into the decode batch: prefilled (its logits are ready), or ``pending`` -- its cache
        holds the first ``done_to`` prompt tokens and the rest are fed by the next decode steps."""
        self.prefilling = None
        if pending:
            for s in p.seqs:
                s.pending, s.length = s.prompt[p.done_to:], p.done_to
            width = len(self._kept_ids) if self._kept_ids is not None else self.cfg.vocab_size
            p.logits = torch.zeros(len(p.seqs), width, device=self.device)  # never sampled: rows feed first
        if self.cache is None:
            self.rows, self.cache, self.logits = list(p.seqs), p.cache, p.logits
        else:
            assert self.logits is not None and p.logits is not None
            self.cache = concat_caches(self.cache, p.cache)
            self.logits = torch.cat([self.logits, p.logits])
            self.rows += p.seqs

    def _decode(self) -> list[SeqEvent]:
        if not self.rows:
            return []
        assert self.logits is not None and self.cache is not None
        events: list[SeqEvent] = []
        keep: list[int] = []
        live = [r for r, s in enumerate(self.rows) if not s.dropped and not s.pending]
        rows = self.logits[live] if len(live) < len(self.rows) else self.logits
        outside: dict[int, torch.Tensor] = {}  # rows whose processor allowed no kept id: drawn from a full row
        if any(self.rows[r].processor is not None for r in live):
            rows = torch.stack([self._process(s, rows[k], k, outside) if s.processor is not None else rows[k]
                                for k, s in enumerate(self.rows[r] for r in live)])
        if live:
            tokens = sample_rows(rows, [self.rows[r] for r in live])
            if self._kept_ids is not None:
                tokens = [self._kept_ids[t] for t in tokens]
            for k, full in outside.items():
                tokens[k] = sample_rows(full[None], [self.rows[live[k]]])[0]
        for k, r in enumerate(live):
            s = self.rows[r]
            if s.dropped:  # its processor gave up on it: nothing sampled from unprocessed logits
                continue
            tok = tokens[k]
            s.generated.append(tok)
            if tok in s.params.stop:
                s.finish_reason = "stop"
            elif len(s.generated) >= s.params.max_tokens:
                s.finish_reason = "length"
            events.append(SeqEvent(s, tok, s.finish_reason))
            if s.finish_reason is None:
                keep.append(r)
        keep = sorted(keep + [r for r, s in enumerate(self.rows) if s.pending and not s.dropped])
        if len(keep) < len(self.rows):
            if not keep:
                self.rows, self.cache, self.logits = [], None, None
                return events
            idx = torch.tensor(keep, device=self.device)
            self.cache = select_rows(self.cache, idx)
            self.rows = [self.rows[r] for r in keep]
        feed = torch.tensor([[s.pending.pop(0) if s.pending else s.generated[-1]] for s in self.rows], dtype=torch.long)
        positions = torch.tensor([[s.length] for s in self.rows], dtype=torch.long)
        for s in self.rows:
            s.length += 1
        self.step_sizes.append(len(self.rows))
        self.logits = self.model(feed.to(self.device), positions.to(self.device), self.cache,
                                 torch.zeros(len(self.rows), dtype=torch.long, device=self.device), kept_logits=True)
        return events

    def _process(self, seq: Seq, row: torch.Tensor, k: int, outside: dict[int, torch.Tensor]) -> torch.Tensor:
        """``seq``'s logits processor on one row, through the full vocabulary it is written for. When it leaves
        only ids outside a trimmed vocabulary, the full row goes to ``outside[k]`` (the token is drawn from it)
        and a finite placeholder row comes back."""
        assert seq.processor is not None
        if self.vocab is None:
            return seq.processor(seq.generated, row)
        kept, full = self.vocab.process(seq.processor, seq.generated, row)
        if full is None:
            return kept
        outside[k] = full
        return torch.zeros_like(kept)


def sample_rows(logits: torch.Tensor, seqs: Sequence[Seq]) -> list[int]:
    """One token per row of ``logits (B, V)``, in one pass over the batch: greedy rows take the argmax; the
    others draw exactly from softmax(logits / T) (after top-k/top-p when set) by inverting the CDF at a
    uniform number from the row's own generator -- one random number per row, not one per vocabulary entry,
    and reproducible for a seed."""
    sampled = [r for r, s in enumerate(seqs) if s.generator is not None]
    if not sampled:
        return logits.argmax(-1).tolist()
    x = logits[sampled].float()
    temps = torch.tensor([seqs[r].params.temperature for r in sampled], device=x.device)
    x = x / temps[:, None]
    for k, r in enumerate(sampled):
        p = seqs[r].params
        if p.top_p < 1.0 or p.top_k > 0:
            x[k] = filter_logits(x[k], 1.0, p.top_p, p.top_k)
    cdf = torch.softmax(x, dim=-1).cumsum(-1)
    u = torch.cat([torch.rand(1, generator=seqs[r].generator) for r in sampled]).to(x.device)
    # right=True: the first index whose CDF exceeds the draw, so a zero-probability (masked) token is never
    # picked; a draw rounded up to the total falls back to the row's most likely token.
    picks = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).squeeze(1)
    if bool((picks >= x.shape[-1]).any()):
        picks = torch.where(picks < x.shape[-1], picks, x.argmax(-1))
    if len(sampled) == len(seqs):
        return picks.tolist()
    out = logits.argmax(-1)
    out[torch.tensor(sampled, device=out.device)] = picks
    return out.tolist()


def run_all(batch: ContinuousBatch, on_event: Callable[[SeqEvent], None] | None = None) -> None:
    """Advance until every sequence has finished (tests, offline use)."""
    while not batch.idle:
        for ev in batch.advance():
            if on_event is not None:
                on_event(ev)
