"""Sampling: seeded reproducibility, filters, distribution."""

from __future__ import annotations

import pytest
import torch

from gptoss.engine.sampling import SamplingParams, filter_logits, make_sampler


def logits(seed: int = 0, v: int = 1000) -> torch.Tensor:
    return torch.randn(v, generator=torch.Generator().manual_seed(seed)) * 3


def test_seed_reproducible_and_seeds_differ():
    x = logits()
    draws = lambda seed: [make_sampler(1.0, seed=seed)(x) for _ in range(1)] + [  # noqa: E731
        s(x) for s in [make_sampler(1.0, seed=seed)] for _ in range(30)]
    assert draws(7) == draws(7)
    assert draws(7) != draws(8)


def test_greedy_and_degenerate_filters_pick_argmax():
    x = logits(1)
    best = int(x.argmax())
    assert make_sampler(0.0)(x) == best
    assert all(make_sampler(1.0, top_k=1, seed=s)(x) == best for s in range(20))
    assert all(make_sampler(1.0, top_p=1e-6, seed=s)(x) == best for s in range(20))


def test_top_k_and_top_p_sets():
    x = torch.tensor([4.0, 3.0, 2.0, 1.0, 0.0])
    assert torch.isfinite(filter_logits(x, 1.0, 1.0, 2)).tolist() == [True, True, False, False, False]
    p = torch.softmax(x, -1)  # [0.636, 0.234, 0.086, ...]
    kept = torch.isfinite(filter_logits(x, 1.0, float(p[0] + p[1]) - 1e-3, 0)).tolist()
    assert kept == [True, True, False, False, False]


def test_sampling_follows_the_distribution():
    x = torch.tensor([0.0, 1.0, 2.0])
    sampler = make_sampler(1.0, seed=0)
    n = 4000
    counts = torch.bincount(torch.tensor([sampler(x) for _ in range(n)]), minlength=3).float() / n
    expected = torch.softmax(x, -1)
    assert torch.allclose(counts, expected, atol=0.03), (counts, expected)
    hot = make_sampler(0.25, seed=0)
    assert sum(hot(x) == 2 for _ in range(500)) > 470  # T=0.25 puts 98% on the top token


@pytest.mark.parametrize("bad", [dict(max_tokens=0), dict(temperature=-1), dict(top_p=0), dict(top_k=-2)])
def test_params_validation(bad):
    with pytest.raises(ValueError):
        SamplingParams(**bad)
