"""Token sampling: temperature, top-k, top-p, seeded and reproducible.

``make_sampler`` returns a closure over one row's logits. Sampling uses the exponential-race
trick (argmax of p / Exp(1) noise), which draws exactly from p without a cumulative-sum search
or a host sync; the noise comes from a per-request ``torch.Generator`` so a seed replays.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

Sampler = Callable[[torch.Tensor], int]
# A per-row hook run before sampling: (tokens generated so far for the row, logits (V,)) -> the logits
# to sample from (e.g. with disallowed tokens set to -inf by a grammar). It sees every sampled token
# through the growing list, so it can keep its own state (a parser, a grammar matcher) in step.
LogitsProcessor = Callable[[Sequence[int], torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens for one sequence.

    ``temperature == 0`` is greedy. ``top_k == 0`` and ``top_p == 1`` disable those filters.
    Generation ends after ``max_tokens`` tokens or on a token in ``stop`` (which is returned).
    """

    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[int, ...] = field(default=())

    def __post_init__(self) -> None:
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise ValueError(f"max_tokens must be a positive integer, got {self.max_tokens!r}")
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be a non-negative integer, got {self.top_k!r}")
        object.__setattr__(self, "stop", tuple(int(t) for t in self.stop))


def filter_logits(logits: torch.Tensor, temperature: float, top_p: float, top_k: int) -> torch.Tensor:
    """Scaled logits of one row ``(V,)`` with excluded tokens set to -inf."""
    x = logits.float() / temperature
    if 0 < top_k < x.shape[-1]:
        kth = torch.topk(x, top_k).values[-1]
        x = x.masked_fill(x < kth, float("-inf"))
    if top_p < 1.0:
        sorted_x, order = torch.sort(x, descending=True)
        probs = torch.softmax(sorted_x, dim=-1)
        # Drop a token when the mass before it already reaches top_p (the first always stays).
        drop = probs.cumsum(-1) - probs >= top_p
        x = x.scatter(-1, order, sorted_x.masked_fill(drop, float("-inf")))
    return x


def make_sampler(temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
                 seed: int | None = None, device: torch.device | str = "cpu") -> Sampler:
    """A closure ``logits (V,) -> token id``; deterministic for a given seed."""
    if temperature == 0:
        return lambda logits: int(torch.argmax(logits))
    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(seed)

    def sample(logits: torch.Tensor) -> int:
        probs = torch.softmax(filter_logits(logits, temperature, top_p, top_k), dim=-1)
        noise = torch.empty_like(probs).exponential_(generator=gen)
        return int(torch.argmax(probs / noise))

    return sample
