"""Optional 8-bit format for the non-expert weights: int8 rows with one float32 scale per row.

Decoding a token reads every attention weight and the whole unembedding; in bf16 they are two
thirds of the bytes of gpt-oss-20b's token. Stored as int8 (symmetric, per output row:
``scale = max|w_row| / 127``, ``q = round(w / scale)``) they take half the bytes, so decoding,
which is bound by memory bandwidth, gets faster. The MXFP4 experts, the router, the norms, the
sinks and the embedding table (a lookup: one row per token) are left as they are.

Quantizing happens at load time, one layer at a time (the unembedding in row chunks), and the
memory-mapped bf16 pages of each converted weight are released right after (``madvise``), so
the peak resident memory stays near the quantized model's size, not the sum of both.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap

import torch
from torch import nn

from gptoss.model.transformer import Int8Linear, Transformer

MODES = ("none", "int8")
ROW_CHUNK = 8192  # rows converted at a time: bounds the float32 temporary (8192 x 2880 x 4 = 94 MB)


class QuantizeError(ValueError):
    """An unknown quantization mode or a model that cannot be quantized."""


def quantize_rows(w: torch.Tensor, chunk: int = ROW_CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """``w [R, K]`` -> ``(q int8 [R, K], scale float32 [R])`` with ``w ~ q * scale[:, None]``.

    Symmetric per row; all-zero rows get scale 1 (q = 0). Error per weight <= scale / 2.
    """
    if w.dim() != 2 or not w.is_floating_point():
        raise QuantizeError(f"expected a floating-point [rows, cols] weight, got {w.dtype} {tuple(w.shape)}")
    r, k = w.shape
    q = torch.empty(r, k, dtype=torch.int8)
    scale = torch.empty(r, dtype=torch.float32)
    for r0 in range(0, r, chunk):
        part = w[r0:r0 + chunk].float()
        s = part.abs().amax(dim=1) / 127.0
        s = torch.where(s > 0, s, torch.ones_like(s))
        q[r0:r0 + chunk] = torch.round(part / s[:, None]).clamp_(-127, 127).to(torch.int8)
        scale[r0:r0 + chunk] = s
    return q, scale


def dequantize_rows(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return (q.float() * scale[:, None]).to(dtype)


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name, use_errno=True) if name else None
    except OSError:
        return None


_LIBC = _libc()


def release_pages(t: torch.Tensor) -> None:
    """Drop ``t``'s whole pages from this process's resident memory if they are file-backed and
    unmodified (a memory-mapped checkpoint: reading them again faults them back in from the page
    cache). Best effort; does nothing where ``madvise`` is unavailable."""
    if _LIBC is None or t.device.type != "cpu" or not hasattr(mmap, "MADV_DONTNEED"):
        return
    page = mmap.PAGESIZE
    if not t.is_contiguous():
        return
    start = t.data_ptr()
    end = start + t.numel() * t.element_size()
    lo, hi = -(-start // page) * page, end // page * page  # only pages entirely inside the tensor
    if hi > lo:
        _LIBC.madvise(ctypes.c_void_p(lo), ctypes.c_size_t(hi - lo), mmap.MADV_DONTNEED)


def _is_mapped(t: torch.Tensor) -> bool:
    """Whether t views a read-only-for-us mapping we may drop (the loader's mapped checkpoint): its
    storage is not resizable, unlike every tensor torch allocated itself."""
    return not t.untyped_storage().resizable()


def quantize_linear(layer: nn.Linear) -> Int8Linear:
    w = layer.weight.detach()
    q, scale = quantize_rows(w)
    bias = None if layer.bias is None else layer.bias.detach()
    if _is_mapped(w):
        release_pages(w)
    return Int8Linear(q, scale, bias)


def quantize_transformer(model: Transformer, mode: str = "int8") -> Transformer:
    """Convert, in place, the attention projections and the unembedding to ``mode`` (``none``
    leaves the model alone). Inference only: the int8 layers carry no gradients."""
    if mode not in MODES:
        raise QuantizeError(f"unknown quantization {mode!r}; choose one of {', '.join(MODES)}")
    if mode == "none":
        return model
    if model.embedding.weight.device.type != "cpu":
        raise QuantizeError("int8 non-expert weights are implemented for the CPU only; use --quantize none")
    for block in model.block:
        attn = block.attn
        if isinstance(attn.qkv, nn.Linear):
            attn.qkv = quantize_linear(attn.qkv)
        if isinstance(attn.out, nn.Linear):
            attn.out = quantize_linear(attn.out)
    if isinstance(model.unembedding, nn.Linear):
        model.unembedding = quantize_linear(model.unembedding)
    return model
