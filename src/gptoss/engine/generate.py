"""Batched generation over the model with explicit KV caches.

:class:`BatchGenerator` owns one cache per layer for a batch of sequences of different lengths
(right-padded; padding has position -1 and is never attended to or cached). ``prefill`` runs the
prompts in chunks; each ``step`` decodes one token for every unfinished row in one forward.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from gptoss.engine.sampling import LogitsProcessor, SamplingParams, make_sampler
from gptoss.model.cache import make_cache
from gptoss.model.transformer import Transformer

DEFAULT_PREFILL_CHUNK = 512


@dataclass
class TokenEvent:
    """One sampled token of row ``row``; ``finish_reason`` is "stop" or "length" on its last."""

    row: int
    token: int
    logprob: float
    finish_reason: str | None = None


def check_tokens(tokens: Sequence[int], vocab_size: int) -> list[int]:
    out = []
    for t in tokens:
        if isinstance(t, bool) or not isinstance(t, int | torch.Tensor) or not 0 <= int(t) < vocab_size:
            raise ValueError(f"token id {t!r} is not an integer in [0, {vocab_size})")
        out.append(int(t))
    if not out:
        raise ValueError("the prompt must contain at least one token")
    return out


class BatchGenerator:
    """Prefill then decode several sequences together.

    ``logits_processors`` (optional, one per row, ``None`` for none) rewrite a row's logits before
    each sample, e.g. a grammar mask for structured outputs (:data:`LogitsProcessor`).
    """

    def __init__(self, model: Transformer, prompts: Sequence[Sequence[int]],
                 params: SamplingParams | Sequence[SamplingParams],
                 prefill_chunk: int = DEFAULT_PREFILL_CHUNK,
                 logits_processors: Sequence[LogitsProcessor | None] | None = None) -> None:
        cfg = model.config
        self.model = model
        self.prompts = [check_tokens(p, cfg.vocab_size) for p in prompts]
        if not self.prompts:
            raise ValueError("no prompts given")
        b = len(self.prompts)
        self.params = list(params) if isinstance(params, Sequence) else [params] * b
        if len(self.params) != b:
            raise ValueError(f"{len(self.params)} sampling params for {b} prompts")
        self.device = model.embedding.weight.device
        self.dtype = model.embedding.weight.dtype
        self.samplers = [make_sampler(p.temperature, p.top_p, p.top_k, p.seed) for p in self.params]
        self.processors = list(logits_processors) if logits_processors is not None else [None] * b
        if len(self.processors) != b:
            raise ValueError(f"{len(self.processors)} logits processors for {b} prompts")
        self.cache = make_cache(cfg, b, self.dtype, self.device)
        self.prefill_chunk = prefill_chunk
        self.lengths = [len(p) for p in self.prompts]
        self.generated: list[list[int]] = [[] for _ in range(b)]
        self.finished = [False] * b
        self._next_logits: torch.Tensor | None = None  # (B, V) logits to sample from
        # A trimmed vocabulary is sampled over its kept ids only (column i is token kept[i]); -inf
        # columns carry no probability, so greedy picks and log-probabilities are unchanged.
        self.vocab = model.vocab
        self._kept_ids: list[int] | None = None if model.vocab is None else model.vocab.kept.tolist()

    @property
    def done(self) -> bool:
        return all(self.finished)

    @torch.inference_mode()
    def prefill(self) -> None:
        """Run all prompt tokens; afterwards ``step`` samples each row's first new token."""
        b, longest, chunk = len(self.prompts), max(self.lengths), self.prefill_chunk
        last = torch.tensor(self.lengths, device=self.device) - 1
        logits = None
        for c0 in range(0, longest, chunk):
            c1 = min(c0 + chunk, longest)
            tokens = torch.zeros(b, c1 - c0, dtype=torch.long)
            positions = torch.full((b, c1 - c0), -1, dtype=torch.long)
            for r, p in enumerate(self.prompts):
                part = p[c0:c1]
                tokens[r, :len(part)] = torch.tensor(part)
                positions[r, :len(part)] = torch.arange(c0, c0 + len(part))
            index = (last - c0).clamp(0, c1 - c0 - 1)
            out = self.model(tokens.to(self.device), positions.to(self.device), self.cache, index,
                             kept_logits=True)  # (B, V) or (B, kept)
            here = (last >= c0) & (last < c1)
            logits = out if logits is None else torch.where(here[:, None], out, logits)
        self._next_logits = logits

    @torch.inference_mode()
    def step(self) -> list[TokenEvent]:
        """Sample one token per unfinished row, then run them through the model."""
        if self._next_logits is None:
            self.prefill()
        assert self._next_logits is not None
        logprobs = torch.log_softmax(self._next_logits, dim=-1)
        events = []
        feed = torch.zeros(len(self.prompts), 1, dtype=torch.long)
        positions = torch.full((len(self.prompts), 1), -1, dtype=torch.long)
        for r, params in enumerate(self.params):
            if self.finished[r]:
                continue
            row_logits = self._next_logits[r]
            processor = self.processors[r]
            outside = None  # a full-vocabulary row to draw from: the processor allowed no kept id
            if processor is not None:  # written for full-vocabulary rows
                if self.vocab is None:
                    row_logits = processor(self.generated[r], row_logits)
                else:
                    row_logits, outside = self.vocab.process(processor, self.generated[r], row_logits)
            if outside is not None:
                tok, logprob = self.samplers[r](outside), float("-inf")  # a token the model gives no weight
            else:
                col = self.samplers[r](row_logits)
                tok = col if self._kept_ids is None else self._kept_ids[col]
                logprob = float(logprobs[r, col])
            self.generated[r].append(tok)
            reason = ("stop" if tok in params.stop
                      else "length" if len(self.generated[r]) >= params.max_tokens else None)
            events.append(TokenEvent(r, tok, logprob, reason))
            if reason:
                self.finished[r] = True
            else:
                feed[r, 0], positions[r, 0] = tok, self.lengths[r]
                self.lengths[r] += 1
        if not self.done:
            self._next_logits = self.model(feed.to(self.device), positions.to(self.device), self.cache,
                                           torch.zeros(len(self.prompts), dtype=torch.long, device=self.device),
                                           kept_logits=True)
        return events

    def __iter__(self) -> Iterator[TokenEvent]:
        while not self.done:
            yield from self.step()


def generate_batch(model: Transformer, prompts: Sequence[Sequence[int]],
                   params: SamplingParams | Sequence[SamplingParams]) -> list[list[int]]:
    """Generate for several prompts in shared forwards; each list ends with its stop token, if any."""
    gen = BatchGenerator(model, prompts, params)
    for _ in gen:
        pass
    return gen.generated
