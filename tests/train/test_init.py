"""Scratch initialisation (the recipe of the bundled gpt-oss-tiny): its scales, and that it is seeded."""

from __future__ import annotations

import math

import torch

from gptoss.config import preset
from gptoss.model.transformer import DenseExpertWeight
from gptoss.train.init import STD, init_model


def _cfg():
    return preset("tiny", num_hidden_layers=2, hidden_size=128, num_attention_heads=4, num_key_value_heads=2,
                  head_dim=32, num_experts=4, experts_per_token=2, intermediate_size=128, sliding_window=32,
                  initial_context_length=256, kept_token_ids=tuple(range(600)))


def test_init_scales():
    cfg = _cfg()
    params = dict(init_model(cfg, 0).named_parameters())
    out_std = STD / math.sqrt(2 * cfg.num_hidden_layers)  # residual outputs: the stream does not grow with depth
    for name, want in (("embedding.weight", STD), ("block.0.attn.qkv.weight", STD), ("block.0.mlp.gate.weight", STD),
                       ("block.0.mlp.mlp1_weight.weight", STD), ("unembedding.weight", STD),
                       ("block.1.attn.out.weight", out_std), ("block.1.mlp.mlp2_weight.weight", out_std)):
        got = params[name].std().item()
        assert abs(got - want) < 0.1 * want, (name, got, want)
    for name, p in params.items():
        if name.endswith("bias") or name.endswith("sinks"):
            assert torch.count_nonzero(p) == 0, name
        if name.endswith(".scale"):
            assert torch.all(p == 1.0), name


def test_init_is_seeded_and_trainable():
    a, b, c = init_model(_cfg(), 3), init_model(_cfg(), 3), init_model(_cfg(), 4)
    assert torch.equal(a.embedding.weight, b.embedding.weight)
    assert not torch.equal(a.embedding.weight, c.embedding.weight)
    assert all(isinstance(blk.mlp.mlp1_weight, DenseExpertWeight) for blk in a.block)
