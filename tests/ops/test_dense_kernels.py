"""The C kernels of the cpu backend other than the MXFP4 product, each against the reference op on
random shapes (odd sizes included): dense linear (bf16 / float32 / int8 weights, the decode and
the prefill paths), RMSNorm, rotary embedding, attention over cache views, the int8 format, and
whole-model forwards with int8 non-expert weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import gptoss
from gptoss import ops
from gptoss.ops import cpu, reference
from gptoss.weights.quantize import QuantizeError, dequantize_rows, quantize_rows, quantize_transformer

needs_kernel = pytest.mark.skipif(not cpu.available(), reason="the C kernels do not build here")
TOL = 1e-5  # float32: relative to sum(|x| * |w|), the scale of a dot product's rounding error


@pytest.fixture(autouse=True)
def _restore_backend():
    yield
    ops.select_backend("reference")


def _bound(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return x.double().abs() @ w.double().abs().T


LINEAR_SHAPES = [(n, r, k) for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 13) for r, k in ((1, 8), (5, 3), (37, 99), (64, 2880))]


@needs_kernel
@pytest.mark.parametrize(("n", "r", "k"), LINEAR_SHAPES)
@pytest.mark.parametrize("wtype", ["float32", "bfloat16", "int8"])
def test_linear_float32_matches_reference(n: int, r: int, k: int, wtype: str) -> None:
    gen = torch.Generator().manual_seed(n * 7919 + r * 31 + k)
    x = torch.randn(n, k, generator=gen)
    bias = torch.randn(r, generator=gen)
    if wtype == "int8":
        q = torch.randint(-127, 128, (r, k), dtype=torch.int8, generator=gen)
        weight = (q, torch.rand(r, generator=gen) + 0.01)
        dense = dequantize_rows(*weight)
    else:
        weight = torch.randn(r, k, generator=gen).to(getattr(torch, wtype))
        dense = weight.float()
    for b in (bias, None):
        got = cpu.linear(x, weight, b)  # float32 activations with any of the weight formats
        ref = x.double() @ dense.double().T + (0 if b is None else b.double())
        assert got.dtype == torch.float32 and got.shape == (n, r)
        bound = _bound(x, dense) + (0 if b is None else b.abs().double())
        assert ((got.double() - ref).abs() <= TOL * bound + 1e-30).all()


@needs_kernel
@pytest.mark.parametrize("n", [1, 2, 3, 4, 6, 9, 40])
def test_linear_bf16_matches_torch(n: int) -> None:
    """bf16 activations and weights: the products are exact in float32, so only the summation
    order and the final bf16 rounding can differ from torch's bf16 linear."""
    gen = torch.Generator().manual_seed(n)
    r, k = 97, 2880
    x = torch.randn(2, n, k, generator=gen).bfloat16()  # a leading batch dimension is kept
    w = (torch.randn(r, k, generator=gen) * 0.05).bfloat16()
    b = torch.randn(r, generator=gen).bfloat16()
    got = cpu.linear(x, w, b)
    exact = (x.double() @ w.double().T + b.double())
    assert got.dtype == torch.bfloat16 and got.shape == (2, n, r)
    # One bf16 rounding (2^-8 relative) of a sum correct to float32 rounding.
    scale = x.double().abs() @ w.double().abs().T + b.double().abs()
    assert ((got.double() - exact).abs() <= exact.abs() * 2**-8 + 1e-5 * scale).all()


@needs_kernel
def test_linear_threads_do_not_change_bits() -> None:
    gen = torch.Generator().manual_seed(11)
    w = torch.randn(301, 200, generator=gen).bfloat16()
    for n in (1, 3, 20):
        x = torch.randn(n, 200, generator=gen)
        torch.set_num_threads(1)
        one = cpu.linear(x, w.float())
        torch.set_num_threads(2)
        assert torch.equal(cpu.linear(x, w.float()), one)


@needs_kernel
def test_linear_falls_back_for_gradients_and_checks_shapes() -> None:
    w = torch.randn(4, 8, requires_grad=True)
    x = torch.randn(3, 8)
    y = cpu.linear(x, w)  # gradients wanted: the reference path
    y.sum().backward()
    assert w.grad is not None
    with torch.no_grad(), pytest.raises(ValueError, match="does not fit"):
        cpu.linear(torch.randn(3, 9), w)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("h", [1, 7, 64, 2880])
def test_rms_norm_matches_reference(dtype: torch.dtype, h: int) -> None:
    gen = torch.Generator().manual_seed(h)
    x = (torch.randn(2, 5, h, generator=gen) * 3).to(dtype)
    scale = torch.rand(h, generator=gen) + 0.5
    got, ref = cpu.rms_norm(x, scale, 1e-5), reference.rms_norm(x, scale, 1e-5)
    assert got.dtype == dtype and got.shape == x.shape
    tol = 1e-6 if dtype == torch.float32 else 2**-7
    assert ((got.float() - ref.float()).abs() <= tol * ref.float().abs() + 1e-6).all()


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("b", "t", "heads", "extra", "d"), [(1, 1, 72, 1024, 64), (2, 5, 3, 7, 16), (1, 3, 2, 0, 6)])
def test_rotary_matches_reference(dtype: torch.dtype, b: int, t: int, heads: int, extra: int, d: int) -> None:
    gen = torch.Generator().manual_seed(d + t)
    x = torch.randn(b, t, heads * d + extra, generator=gen).to(dtype)
    angles = torch.randn(b, t, d // 2, generator=gen) * 10
    cos, sin = angles.cos() * 1.3, angles.sin() * 1.3
    ref = reference.rotary(x, heads, cos, sin)
    got = cpu.rotary(x.clone(), heads, cos, sin)
    tol = 1e-6 if dtype == torch.float32 else 2**-7
    assert got.dtype == dtype and got.shape == x.shape
    assert ((got.float() - ref.float()).abs() <= tol * (ref.float().abs() + 1)).all()
    assert torch.equal(got[..., heads * d:], x[..., heads * d:])  # the values part is untouched


ATTN_CASES = [  # (b, t, hkv, g, d, slots, window)
    (1, 1, 8, 8, 64, 300, None), (1, 1, 8, 8, 64, 129, 128), (2, 5, 2, 3, 16, 40, 8), (1, 7, 1, 1, 8, 7, None),
    (2, 1, 3, 2, 24, 1, 4), (1, 4, 2, 4, 64, 0, None),
]


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("b", "t", "hkv", "g", "d", "s", "window"), ATTN_CASES)
def test_attention_matches_reference_on_cache_views(dtype: torch.dtype, b: int, t: int, hkv: int, g: int, d: int,
                                                     s: int, window: int | None) -> None:
    """Keys and values are strided views into a bigger buffer (as a cache hands them out), slot
    positions are shuffled with holes (-1) like a ring buffer, and some queries are padding."""
    gen = torch.Generator().manual_seed(b * 100 + s)
    q = torch.randn(b, t, hkv, g, d, generator=gen).to(dtype)
    kbuf = torch.randn(b, s + 3, hkv, d, generator=gen).to(dtype)
    vbuf = torch.randn(b, s + 3, hkv, d, generator=gen).to(dtype)
    k, v = kbuf[:, :s], vbuf[:, :s]
    kpos = torch.stack([torch.randperm(s + 3, generator=gen) - 3 for _ in range(b)])[:, :s].clamp(min=-1)
    qpos = torch.randint(-1, s + 3, (b, t), generator=gen)
    sinks = torch.randn(hkv * g, generator=gen)
    got = cpu.attention(q, k, v, sinks, qpos, kpos, window, d ** -0.5)
    ref = reference.attention(q, k, v, sinks, qpos, kpos, window, d ** -0.5)
    assert got.dtype == dtype and got.shape == ref.shape
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert float((got.float() - ref.float()).abs().max()) <= tol


def test_quantize_rows_error_bound_and_zero_rows() -> None:
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(50, 33, generator=gen) * torch.logspace(-3, 2, 50)[:, None]
    w[7] = 0
    q, scale = quantize_rows(w.bfloat16(), chunk=16)  # several chunks
    assert q.dtype == torch.int8 and scale.dtype == torch.float32 and scale.shape == (50,)
    assert int(q.abs().max()) <= 127 and bool((q[7] == 0).all()) and float(scale[7]) == 1.0
    err = (dequantize_rows(q, scale) - w.bfloat16().float()).abs()
    assert (err <= scale[:, None] * 0.5001).all()  # at most half a step per weight (plus float32 rounding)
    with pytest.raises(QuantizeError):
        quantize_rows(torch.zeros(3, dtype=torch.int8))


def _ids(n: int, seed: int) -> list[int]:
    return torch.randint(0, 199998, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def _rel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).abs().amax(-1) / b.abs().amax(-1)


def _int8_model(path: Path, dtype: str) -> gptoss.Model:
    model = gptoss.load(path, dtype=dtype)
    quantize_transformer(model.transformer, "int8")
    return model


@needs_kernel
def test_int8_model_cpu_equals_reference_and_stays_close_to_full_precision(tiny_checkpoint: Path) -> None:
    ids = _ids(37, 3)
    full = gptoss.load(tiny_checkpoint, dtype="float32").logits(ids)
    model = _int8_model(tiny_checkpoint, "float32")
    ref = model.logits(ids, chunk=16)  # reference ops on the int8 model
    ops.select_backend("cpu")
    assert float(_rel(model.logits(ids, chunk=16), ref).max()) < TOL
    assert float(_rel(model.logits(ids[:12], chunk=1), ref[:12]).max()) < TOL  # one token at a time
    drift = _rel(ref, full)  # the int8 format's own cost: small, not zero
    assert 0 < float(drift.max()) < 0.5


@needs_kernel
def test_int8_bf16_model_cpu_as_accurate_as_reference(tiny_checkpoint: Path) -> None:
    """bf16 rounding (and, on a random model, a router tie) differs between backends, so both are
    scored against the float32 int8 model."""
    ids = _ids(37, 4)
    truth = _int8_model(tiny_checkpoint, "float32").logits(ids)
    model = _int8_model(tiny_checkpoint, "bfloat16")
    ref = _rel(model.logits(ids, chunk=16), truth)
    ops.select_backend("cpu")
    for chunk in (16, 1):
        got = _rel(model.logits(ids, chunk=chunk), truth)
        assert float(got.mean()) <= 1.5 * float(ref.mean()) + 1e-3, chunk


def test_quantize_rejects_unknown_mode(tiny_checkpoint: Path) -> None:
    model = gptoss.load(tiny_checkpoint, dtype="float32")
    with pytest.raises(QuantizeError, match="unknown quantization"):
        quantize_transformer(model.transformer, "int4")
    assert quantize_transformer(model.transformer, "none") is model.transformer


@needs_kernel
def test_bf16_model_cpu_backend_as_accurate_as_reference(tiny_checkpoint: Path) -> None:
    """The whole bf16 forward with every C kernel (prefill chunks and single-token decoding). bf16
    rounding differs between the two backends (summation order), and a random model amplifies
    it, so both are scored against the float32 forward: the C kernels must be as accurate."""
    ids = _ids(41, 5)
    truth = gptoss.load(tiny_checkpoint, dtype="float32").logits(ids)
    model = gptoss.load(tiny_checkpoint, dtype="bfloat16")

    def err(logits: torch.Tensor) -> torch.Tensor:
        return (logits - truth).abs().amax(-1) / truth.abs().amax(-1)

    ref = err(model.logits(ids, chunk=16))
    ops.select_backend("cpu")
    for chunk in (16, 1):
        got = err(model.logits(ids, chunk=chunk))
        assert float(got.mean()) <= 1.5 * float(ref.mean()) + 1e-3, chunk
        assert float(got.max()) <= 2 * float(ref.max()) + 1e-3, chunk
