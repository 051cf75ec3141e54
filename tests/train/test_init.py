"""Scratch initialisation: the scales that let a gpt-oss model learn to copy from its context quickly."""

from __future__ import annotations

import math

import torch

from gptoss.config import preset
from gptoss.model.transformer import DenseExpertWeight
from gptoss.train.init import EMBED_STD, init_model


def _cfg():
    return preset("tiny", num_hidden_layers=2, hidden_size=128, num_attention_heads=4, num_key_value_heads=2,
                  head_dim=32, num_experts=4, experts_per_token=2, intermediate_size=128, sliding_window=32,
                  initial_context_length=256, kept_token_ids=tuple(range(600)))


def test_init_scales():
    model = init_model(_cfg(), 0)
    params = dict(model.named_parameters())
    emb = params["embedding.weight"]
    assert abs(emb.std().item() - EMBED_STD) < 0.05 * EMBED_STD
    for name in ("block.0.attn.qkv.weight", "block.1.attn.out.weight", "block.0.mlp.gate.weight",
                 "block.0.mlp.mlp1_weight.weight", "block.1.mlp.mlp2_weight.weight", "unembedding.weight"):
        w = params[name]
        want = 1.0 / math.sqrt(3 * w.shape[-1])  # PyTorch's nn.Linear scale, by fan-in
        assert abs(w.std().item() - want) < 0.1 * want, (name, w.std().item(), want)
    for name, p in params.items():
        if name.endswith("bias") or name.endswith("sinks"):
            assert torch.count_nonzero(p) == 0, name
        if name.endswith(".scale"):
            assert torch.all(p == 1.0), name
    assert all(isinstance(b.mlp.mlp1_weight, DenseExpertWeight) for b in model.block)


def test_init_is_seeded():
    a, b, c = init_model(_cfg(), 3), init_model(_cfg(), 3), init_model(_cfg(), 4)
    assert torch.equal(a.embedding.weight, b.embedding.weight)
    assert not torch.equal(a.embedding.weight, c.embedding.weight)
