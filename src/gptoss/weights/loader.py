"""Build a :class:`~gptoss.model.Transformer` from a checkpoint without holding weights twice.

Parameters are created on the meta device and then *assigned* the mapped tensors: on CPU with
the checkpoint's dtype nothing is copied; MXFP4 experts always stay packed (uint8).
"""

from __future__ import annotations

from pathlib import Path

import torch

from gptoss.model.transformer import RotaryEmbedding, Transformer, TrimmedVocab
from gptoss.weights.checkpoint import Checkpoint, open_checkpoint, read_native_tensors

# Small tensors kept in float32 whatever the compute dtype (the reference does the same).
FP32_SUFFIXES = (".scale", ".sinks")


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp32": torch.float32,
             "float32": torch.float32, "float": torch.float32, "fp16": torch.float16,
             "float16": torch.float16}
    if dtype not in names:
        raise ValueError(f"unknown dtype {dtype!r}; use bfloat16 or float32")
    return names[dtype]


def parse_device(device: str | torch.device) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    return dev


def build_model(ckpt: Checkpoint, dtype: torch.dtype, device: torch.device) -> Transformer:
    tensors = read_native_tensors(ckpt)
    with torch.device("meta"):
        model = Transformer(ckpt.config)
    state = {}
    for name, t in tensors.items():
        if t.dtype != torch.uint8:
            t = t.to(torch.float32 if name.endswith(FP32_SUFFIXES) else dtype)
        state[name] = t.to(device)
    model.load_state_dict(state, strict=True, assign=True)
    model.rope = RotaryEmbedding(ckpt.config).to(device)
    if ckpt.config.kept_token_ids is not None:
        model.vocab = TrimmedVocab(ckpt.config).to(device)
    model.requires_grad_(False)
    return model.eval()


def load_transformer(path: str | Path, dtype: str | torch.dtype = "bfloat16",
                     device: str | torch.device = "cpu") -> tuple[Transformer, Checkpoint]:
    ckpt = open_checkpoint(path)
    return build_model(ckpt, parse_dtype(dtype), parse_device(device)), ckpt
