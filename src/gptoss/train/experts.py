"""Switch MoE expert weights between packed MXFP4 (inference) and dense floats (training)."""

from __future__ import annotations

import torch

from gptoss.model.transformer import DenseExpertWeight, MXFP4Weight, Transformer
from gptoss.weights.mxfp4 import dequantize_mxfp4, quantize_mxfp4


def dequantize_experts(model: Transformer, dtype: torch.dtype = torch.float32) -> Transformer:
    """Replace every MXFP4Weight by a trainable DenseExpertWeight (in place)."""
    for block in model.block:
        for name in ("mlp1_weight", "mlp2_weight"):
            w = getattr(block.mlp, name)
            if isinstance(w, MXFP4Weight):
                dense = dequantize_mxfp4(w.blocks, w.scales, dtype)  # (E, out, in)
                setattr(block.mlp, name, DenseExpertWeight(dense))
    return model


def quantize_experts(model: Transformer) -> Transformer:
    """Replace every DenseExpertWeight by MXFP4 (in place): what checkpoints store."""
    for block in model.block:
        for name in ("mlp1_weight", "mlp2_weight"):
            w = getattr(block.mlp, name)
            if isinstance(w, DenseExpertWeight):
                e, out, inp = w.weight.shape
                packed = MXFP4Weight(e, out, inp).to(w.weight.device)
                packed.blocks, packed.scales = quantize_mxfp4(w.weight.detach())
                setattr(block.mlp, name, packed)
    return model
