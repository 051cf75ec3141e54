"""The copy warm-up that runs before gpt-oss-tiny's corpus: its examples, its token pool, and that it trains."""

from __future__ import annotations

import random

import pytest
import torch

from gptoss.config import preset
from gptoss.train.copy_warmup import FILLER, SEPARATOR, copy_example, copy_pool, copy_warmup
from gptoss.train.init import init_model, torch_scale_init


def test_an_example_repeats_its_tokens_and_masks_only_the_repeat():
    rng = random.Random(0)
    for _ in range(20):
        tokens, mask = copy_example(rng, [500, 501, 502])
        n = sum(mask)
        assert 3 <= n <= 8 and mask[-n:] == [True] * n and not any(mask[:-n])
        assert tokens[:n] == tokens[-n:] and tokens[-n - 1] == SEPARATOR
        assert set(tokens[n:-n - 1]) <= set(FILLER)


def test_the_pool_is_capitalised_pieces_and_short_numbers():
    from gptoss.tokenizer import get_tokenizer

    tok = get_tokenizer()
    enc = {w: tok.encode(w) for w in (" Oslo", "Paris", "42", " the", ",", "1234")}
    kept = sorted({t for ids in enc.values() for t in ids})
    pool = {tok.decode([t]) for t in copy_pool(kept)}
    assert {" Oslo", "Paris", "42"} <= pool and not pool & {" the", ","}
    assert all(len(p) <= 3 for p in pool if p.isdigit())


def test_warmup_learns_to_copy_and_rejects_an_empty_pool():
    cfg = preset("tiny", num_hidden_layers=2, hidden_size=64, num_attention_heads=2, num_key_value_heads=1,
                 head_dim=32, num_experts=2, experts_per_token=1, intermediate_size=64, sliding_window=64,
                 initial_context_length=256, kept_token_ids=tuple(range(40)))
    torch.manual_seed(0)
    model = init_model(cfg, 0)
    torch_scale_init(model, 0)
    model.requires_grad_(True)
    model.rope.requires_grad_(False)
    losses: list[float] = []
    acc = copy_warmup(model, list(range(10, 20)), 60, seed=0, lr=3e-3, on_step=lambda s, loss, a: losses.append(loss))
    assert len(losses) == 60 and 0.0 <= acc <= 1.0
    assert sum(losses[-10:]) / 10 < 0.8 * sum(losses[:10]) / 10  # bounded: 60 small steps, a clear drop
    with pytest.raises(ValueError, match="non-empty"):
        copy_warmup(model, [], 1, seed=0)
    assert all(p.grad is None for p in model.parameters())  # nothing left behind for the trainer's optimizer


def test_the_pool_takes_lowercase_pieces_when_asked():
    from gptoss.tokenizer import get_tokenizer

    tok = get_tokenizer()
    kept = sorted({t for w in (" Oslo", " toaster", "thomas.das@example.org", ",") for t in tok.encode(w)})
    plain = {tok.decode([t]) for t in copy_pool(kept)}
    wide = {tok.decode([t]) for t in copy_pool(kept, lowercase=True)}
    assert " toaster" not in plain and {" Oslo", " toaster", "@example"} <= wide and "," not in wide
