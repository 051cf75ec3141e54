"""MXFP4 (OCP microscaling FP4, E2M1 + E8M0 scale) as used by gpt-oss expert weights.

A block is 32 consecutive values along the last (input) axis: 16 bytes of FP4 pairs and one
scale byte. Byte b holds element 2b in its low nibble and 2b+1 in its high nibble; the scale is
an exponent with bias 127 (SPEC §2.4). Pure functions, no nn.Module.
"""

from __future__ import annotations

import torch

FP4_VALUES = (
    +0.0, +0.5, +1.0, +1.5, +2.0, +3.0, +4.0, +6.0,
    -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0,
)
BLOCK = 32
SCALE_BIAS = 127

_PAIR_LUT: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}


def fp4_lut(dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
    """The 16-entry E2M1 code -> value table."""
    return torch.tensor(FP4_VALUES, dtype=dtype, device=device)


def _pair_lut(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """256 x 2 table: byte -> (value of low nibble, value of high nibble)."""
    key = (dtype, device)
    if key not in _PAIR_LUT:
        lut = fp4_lut(dtype, device)
        b = torch.arange(256, device=device)
        _PAIR_LUT[key] = torch.stack([lut[b & 0xF], lut[b >> 4]], dim=-1)  # (256, 2)
    return _PAIR_LUT[key]


def unpack_fp4(blocks: torch.Tensor) -> torch.Tensor:
    """uint8 [..., G, 16] -> int64 codes [..., G, 32] in element order (low nibble first)."""
    assert blocks.dtype == torch.uint8, f"{blocks.dtype=}"
    b = blocks.to(torch.int64)
    return torch.stack([b & 0xF, b >> 4], dim=-1).flatten(-2)


def dequantize_mxfp4(
    blocks: torch.Tensor,
    scales: torch.Tensor,
    dtype: torch.dtype = torch.bfloat16,
    chunk_rows: int = 16384,
) -> torch.Tensor:
    """Decode MXFP4 to floats.

    Args:
        blocks: uint8 ``[..., G, 16]`` packed codes.
        scales: uint8 ``[..., G]`` E8M0 exponents.
        dtype: output dtype. Values are exact in BF16 for the scales seen in practice.
        chunk_rows: rows decoded at once, bounding peak temporary memory.

    Returns:
        ``[..., G * 32]`` tensor of ``dtype``.
    """
    assert blocks.dtype == torch.uint8 and scales.dtype == torch.uint8, f"{blocks.dtype=} {scales.dtype=}"
    assert blocks.shape[:-1] == scales.shape and blocks.shape[-1] == 16, f"{blocks.shape=} {scales.shape=}"
    *lead, g, _ = blocks.shape
    rows = blocks.reshape(-1, g, 16)
    exps = scales.reshape(-1, g)
    out = torch.empty(rows.shape[0], g, BLOCK, dtype=dtype, device=blocks.device)
    pair = _pair_lut(dtype, blocks.device)
    for r0 in range(0, rows.shape[0], chunk_rows):
        r1 = min(r0 + chunk_rows, rows.shape[0])
        idx = rows[r0:r1].reshape(-1).to(torch.int32)
        vals = pair.index_select(0, idx).view(r1 - r0, g, BLOCK)  # (rows, G, 32)
        # 2^(e-127) built in float32 (exact for every exponent a float32 can hold), applied
        # in the output dtype: multiplying by a power of two is exact.
        mult = torch.exp2(exps[r0:r1].to(torch.float32) - SCALE_BIAS).to(dtype)
        torch.mul(vals, mult.unsqueeze(-1), out=out[r0:r1])
    return out.view(*lead, g * BLOCK)


def quantize_mxfp4(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode floats ``[..., K]`` (K a multiple of 32) as (blocks ``[..., K/32, 16]``, scales ``[..., K/32]``).

    The scale is the smallest power of two that brings the block's largest magnitude within
    +-6; values round to the nearest E2M1 code (ties go to the smaller magnitude).
    """
    assert w.shape[-1] % BLOCK == 0, f"{w.shape=}"
    *lead, k = w.shape
    x = w.detach().to(torch.float32).reshape(-1, k // BLOCK, BLOCK)
    amax = x.abs().amax(dim=-1)
    # exponent e with amax / 2^e <= 6, clamped to the E8M0 range.
    e = torch.ceil(torch.log2(torch.clamp(amax, min=2.0 ** -126) / 6.0))
    e = torch.clamp(e, -SCALE_BIAS, 127).to(torch.int32)
    y = x / torch.exp2(e.to(torch.float32)).unsqueeze(-1)
    mags = fp4_lut()[:8]  # 0 .. 6, ascending
    # Nearest magnitude; argmin keeps the first (smaller) candidate on ties.
    dist = (y.abs().unsqueeze(-1) - mags).abs()  # (N, G, 32, 8)
    code = dist.argmin(dim=-1)
    code = code | ((y < 0) & (code > 0)).to(torch.int64) << 3
    code = code.view(*code.shape[:-1], 16, 2)
    packed = (code[..., 0] | (code[..., 1] << 4)).to(torch.uint8)
    scales = (e + SCALE_BIAS).to(torch.uint8)
    return packed.view(*lead, k // BLOCK, 16), scales.view(*lead, k // BLOCK)
