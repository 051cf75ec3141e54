"""MXFP4 (E2M1 codes + E8M0 scales) decoding and encoding against hand-computed values (SPEC §2.4)."""

from __future__ import annotations

import math

import pytest
import torch

from gptoss.weights.mxfp4 import FP4_VALUES, dequantize_mxfp4, fp4_lut, quantize_mxfp4, unpack_fp4

SPEC_TABLE = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]
GRID = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0], dtype=torch.float64)  # magnitudes


def pack(codes: list[int]) -> list[int]:
    """32 codes in element order -> 16 bytes (element 2b in the low nibble of byte b)."""
    assert len(codes) % 2 == 0 and all(0 <= c < 16 for c in codes)
    return [codes[2 * b] | (codes[2 * b + 1] << 4) for b in range(len(codes) // 2)]


def random_mxfp4(shape: tuple[int, ...], seed: int, lo: int = 100, hi: int = 150):
    """Random packed blocks ``(*shape, 16)`` and scales ``shape`` with exponents in [lo, hi)."""
    g = torch.Generator().manual_seed(seed)
    blocks = torch.randint(0, 256, (*shape, 16), generator=g).to(torch.uint8)
    scales = torch.randint(lo, hi, shape, generator=g).to(torch.uint8)
    return blocks, scales


# -- the code table ------------------------------------------------------------------------------


def test_lookup_table_is_exactly_e2m1():
    assert len(FP4_VALUES) == 16
    assert list(FP4_VALUES) == SPEC_TABLE
    # Bit 3 is the sign: codes 8..15 are negative, including a genuine -0.0 for code 8.
    for code, v in enumerate(FP4_VALUES):
        assert math.copysign(1.0, v) == (-1.0 if code >= 8 else 1.0), code
        assert FP4_VALUES[code ^ 8] == -v
    for dtype in (torch.float32, torch.bfloat16):
        lut = fp4_lut(dtype)
        assert lut.dtype == dtype and lut.shape == (16,)
        assert lut.float().tolist() == SPEC_TABLE
        assert torch.signbit(lut).tolist() == [c >= 8 for c in range(16)]


def test_unpack_nibble_order():
    # 0x21: low nibble 1 is element 0, high nibble 2 is element 1.
    codes = unpack_fp4(torch.tensor([[0x21, 0xF0, 0x8A]], dtype=torch.uint8))
    assert codes.tolist() == [[1, 2, 0, 15, 10, 8]]
    # All 256 bytes: element 2b = byte & 0xF, element 2b+1 = byte >> 4.
    every = torch.arange(256, dtype=torch.int64).to(torch.uint8).view(16, 16)
    codes = unpack_fp4(every)
    assert codes.shape == (16, 32)
    flat = torch.arange(256).view(16, 16)
    assert torch.equal(codes[:, 0::2], flat & 0xF)
    assert torch.equal(codes[:, 1::2], flat >> 4)


# -- decoding ------------------------------------------------------------------------------------


def test_single_byte_and_scale():
    blocks = torch.zeros(1, 1, 16, dtype=torch.uint8)
    blocks[0, 0, 0] = 0x21
    for scale, mult in ((127, 1.0), (128, 2.0), (126, 0.5), (130, 8.0)):
        out = dequantize_mxfp4(blocks, torch.tensor([[scale]], dtype=torch.uint8), torch.float32)
        assert out.shape == (1, 32)
        assert out[0, :2].tolist() == [0.5 * mult, 1.0 * mult]
        assert not out[0, 2:].any()


def test_hand_built_two_rows_two_blocks():
    # Row 0, block 0 (scale 2^0): codes 0..15 then 15..0.
    r0b0 = list(range(16)) + list(range(15, -1, -1))
    # Row 0, block 1 (scale 2^1): alternating +6 / -0.5, then zeros.
    r0b1 = [7, 9] * 8 + [0] * 16
    # Row 1, block 0 (scale 2^-1): a single -6 at element 31.
    r1b0 = [0] * 31 + [15]
    # Row 1, block 1 (scale 2^-3): +1.5 at element 0, -3 at element 17.
    r1b1 = [3] + [0] * 16 + [13] + [0] * 14
    blocks = torch.tensor([[pack(r0b0), pack(r0b1)], [pack(r1b0), pack(r1b1)]], dtype=torch.uint8)
    scales = torch.tensor([[127, 128], [126, 124]], dtype=torch.uint8)
    assert blocks.shape == (2, 2, 16)
    # The first bytes, written out by hand: element 0 low nibble, element 1 high nibble.
    assert blocks[0, 0, :2].tolist() == [0x10, 0x32]
    assert blocks[0, 1, 0].item() == 0x97
    assert blocks[1, 0, 15].item() == 0xF0

    expected = torch.zeros(2, 64, dtype=torch.float64)
    expected[0, :32] = torch.tensor(
        [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0,
         -6.0, -4.0, -3.0, -2.0, -1.5, -1.0, -0.5, -0.0, 6.0, 4.0, 3.0, 2.0, 1.5, 1.0, 0.5, 0.0])
    expected[0, 32:48] = torch.tensor([12.0, -1.0] * 8)
    expected[1, 31] = -3.0
    expected[1, 32] = 0.1875
    expected[1, 49] = -0.375

    for dtype in (torch.float32, torch.bfloat16):
        out = dequantize_mxfp4(blocks, scales, dtype)
        assert out.dtype == dtype and out.shape == (2, 64)
        assert out.double().tolist() == expected.tolist()
    # Signed zeros survive: code 8 is -0.0.
    out = dequantize_mxfp4(blocks, scales, torch.float32)
    assert bool(torch.signbit(out[0, 8])) and not bool(torch.signbit(out[0, 0]))


def test_extreme_scales_exact():
    blocks = torch.tensor([[pack([1, 2, 3, 4, 5, 6, 7, 15] + [0] * 24)]] * 3, dtype=torch.uint8)  # (3, 1, 16)
    scales = torch.tensor([[0], [1], [200]], dtype=torch.uint8)
    vals = [0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -6.0]
    for dtype in (torch.float32, torch.bfloat16):
        out = dequantize_mxfp4(blocks, scales, dtype).double()
        for row, e in enumerate((0, 1, 200)):
            assert out[row, :8].tolist() == [math.ldexp(v, e - 127) for v in vals], (dtype, e)


def test_bf16_equals_fp32_and_leading_dims():
    blocks, scales = random_mxfp4((3, 5, 4), seed=1)
    f32 = dequantize_mxfp4(blocks, scales, torch.float32)
    bf16 = dequantize_mxfp4(blocks, scales, torch.bfloat16)
    assert f32.shape == bf16.shape == (3, 5, 128)
    assert torch.equal(bf16.float(), f32)
    # Leading dims are only a reshape: decoding the flattened rows gives the same values.
    assert torch.equal(dequantize_mxfp4(blocks.view(15, 4, 16), scales.view(15, 4), torch.float32).view(3, 5, 128), f32)


def test_matches_spec_formula():
    blocks, scales = random_mxfp4((6, 3), seed=2)
    out = dequantize_mxfp4(blocks, scales, torch.float64)
    lut = torch.tensor(SPEC_TABLE, dtype=torch.float64)
    for r in range(6):
        for g in range(3):
            for b in range(16):
                byte, e = int(blocks[r, g, b]), int(scales[r, g])
                assert out[r, 32 * g + 2 * b].item() == math.ldexp(lut[byte & 0xF].item(), e - 127)
                assert out[r, 32 * g + 2 * b + 1].item() == math.ldexp(lut[byte >> 4].item(), e - 127)


@pytest.mark.parametrize("chunk_rows", [1, 3, 7, 64])
def test_chunking_does_not_change_output(chunk_rows):
    blocks, scales = random_mxfp4((2, 10, 3), seed=3)
    full = dequantize_mxfp4(blocks, scales, torch.bfloat16)
    got = dequantize_mxfp4(blocks, scales, torch.bfloat16, chunk_rows=chunk_rows)
    assert torch.equal(got, full)


def test_rejects_bad_inputs():
    blocks, scales = random_mxfp4((2, 3), seed=4)
    with pytest.raises(AssertionError):
        dequantize_mxfp4(blocks.to(torch.int32), scales)
    with pytest.raises(AssertionError):
        dequantize_mxfp4(blocks, scales[:, :2])
    with pytest.raises(AssertionError):
        quantize_mxfp4(torch.zeros(2, 48))


# -- encoding ------------------------------------------------------------------------------------


def block_max_codes(blocks: torch.Tensor) -> torch.Tensor:
    return (unpack_fp4(blocks) & 7).amax(-1)


def test_quantize_shapes_and_canonical_scale():
    w = torch.randn(3, 2, 96, generator=torch.Generator().manual_seed(5))
    blocks, scales = quantize_mxfp4(w)
    assert blocks.dtype == scales.dtype == torch.uint8
    assert blocks.shape == (3, 2, 3, 16) and scales.shape == (3, 2, 3)
    # Smallest power of two bringing the block max within +-6: the scaled max lies in (3, 6], so
    # it is encoded as 3, 4 or 6 (codes 5, 6, 7).
    assert set(block_max_codes(blocks).unique().tolist()) <= {5, 6, 7}
    amax = w.view(3, 2, 3, 32).abs().amax(-1).double()
    step = torch.exp2(scales.double() - 127)
    assert bool((amax <= 6 * step).all()) and bool((amax > 3 * step).all())


def test_round_trip_exact_for_representable_values():
    blocks, scales = random_mxfp4((4, 8, 5), seed=6)
    w = dequantize_mxfp4(blocks, scales, torch.float32)
    b2, s2 = quantize_mxfp4(w)
    assert torch.equal(dequantize_mxfp4(b2, s2, torch.float32), w)
    assert torch.equal(dequantize_mxfp4(b2, s2, torch.bfloat16), w.to(torch.bfloat16))
    # Blocks that were already canonical (max code 6 or 7, no -0 codes) come back byte for byte.
    codes = unpack_fp4(blocks)
    canonical = (block_max_codes(blocks) >= 6) & ~(codes == 8).any(-1)
    assert int(canonical.sum()) > 10
    assert torch.equal(b2[canonical], blocks[canonical])
    assert torch.equal(s2[canonical], scales[canonical])


def test_quantize_of_dequantize_is_canonical_and_idempotent():
    blocks, scales = random_mxfp4((16, 4), seed=7)
    w = dequantize_mxfp4(blocks, scales, torch.bfloat16)
    b2, s2 = quantize_mxfp4(w)
    w2 = dequantize_mxfp4(b2, s2, torch.bfloat16)
    assert torch.equal(w2, w)
    assert set(block_max_codes(b2).unique().tolist()) <= {0, 6, 7}
    b3, s3 = quantize_mxfp4(w2)
    assert torch.equal(b3, b2) and torch.equal(s3, s2)


def test_all_zero_block():
    b, s = quantize_mxfp4(torch.zeros(1, 32))
    assert not b.any()
    assert not dequantize_mxfp4(b, s, torch.float32).any()


def test_gaussian_round_trip_error_bounded():
    g = torch.Generator().manual_seed(8)
    w = torch.randn(64, 256, generator=g, dtype=torch.float64) * torch.exp2(torch.randint(-8, 8, (64, 1), generator=g))
    blocks, scales = quantize_mxfp4(w)
    deq = dequantize_mxfp4(blocks, scales, torch.float32).double()
    step = torch.exp2(scales.double() - 127).repeat_interleave(32, dim=-1)  # per element block scale
    y = (w.float().double() / step).abs()  # magnitude in units of the block scale (0..6)
    assert float(y.max()) <= 6.0
    # Half the local E2M1 spacing: 0.25 below 2, 0.5 in [2, 4], 1 in [4, 6].
    half_gap = torch.where(y <= 2, 0.25, torch.where(y <= 4, 0.5, 1.0))
    err = (deq - w.float().double()).abs() / step
    assert bool((err <= half_gap + 1e-6).all()), float((err - half_gap).max())
    # And it is the nearest grid point: no representable value of the block is closer.
    nearest = (y.unsqueeze(-1) - GRID).abs().amin(-1)
    torch.testing.assert_close(err, nearest, rtol=0, atol=1e-6)
    # Signs are kept (a value that rounds to zero may lose its sign).
    nz = deq != 0
    assert torch.equal(torch.sign(deq[nz]), torch.sign(w[nz]))
    # Overall error is small relative to the block scale.
    assert float(err.mean()) < 0.2


def test_ties_round_to_smaller_magnitude():
    # Block max 6 -> scale 2^0; midpoints between grid values round towards zero, as documented.
    w = torch.tensor([[6.0, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, -5.0, -0.75, 0.3, 4.9] + [0.0] * 20])
    blocks, scales = quantize_mxfp4(w)
    assert scales.tolist() == [[127]]
    out = dequantize_mxfp4(blocks, scales, torch.float32)[0, :12].tolist()
    assert out == [6.0, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, -4.0, -0.5, 0.5, 4.0]
