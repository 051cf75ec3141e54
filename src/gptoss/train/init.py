"""Initialisation for training a gpt-oss model from scratch (not the test fixtures' realistic scales).

Small normal weights (std 0.02), residual output projections scaled by 1/sqrt(2 L) so the residual stream
does not grow with depth, zero biases and sinks, unit norm scales. Experts are dense floats here
(:func:`gptoss.train.experts.dequantize_experts`); export packs them to MXFP4.
"""

from __future__ import annotations

import math

import torch

from gptoss.config import ModelConfig
from gptoss.model.transformer import DenseExpertWeight, Transformer
from gptoss.train.experts import dequantize_experts

STD = 0.02


@torch.no_grad()
def init_model(cfg: ModelConfig, seed: int) -> Transformer:
    """A freshly initialised float32 Transformer with dense (trainable) expert weights."""
    gen = torch.Generator().manual_seed(seed)
    model = dequantize_experts(Transformer(cfg), torch.float32).float()
    out_std = STD / math.sqrt(2 * cfg.num_hidden_layers)
    for name, p in model.named_parameters():
        if name.endswith(".scale"):
            p.fill_(1.0)
        elif name.endswith("bias") or name.endswith("sinks"):
            p.zero_()
        else:
            std = out_std if name.endswith(("attn.out.weight", "mlp2_weight.weight")) else STD
            p.copy_(torch.randn(p.shape, generator=gen) * std)
    for block in model.block:
        assert isinstance(block.mlp.mlp1_weight, DenseExpertWeight)
    return model
