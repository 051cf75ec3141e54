"""The packed-MXFP4 CPU backend (``gptoss.ops.cpu``) against the reference: the C kernel against
``x @ dequantize_mxfp4(...).T``, ``cpu.moe`` against ``reference.moe``, a whole model forward, and
the fallback when no compiler is available."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

import gptoss
from gptoss import ops
from gptoss.ops import cpu, reference
from gptoss.weights.mxfp4 import dequantize_mxfp4, quantize_mxfp4

needs_kernel = pytest.mark.skipif(not cpu.available(), reason="the MXFP4 C kernel does not build here")
TOL = 1e-5  # relative to sum(|x| * |w|), the scale of a dot product's rounding error


@pytest.fixture(autouse=True)
def _restore_backend():
    yield
    ops.select_backend("reference")


def packed(r: int, k: int, gen: torch.Generator, lo: int = 112, hi: int = 136) -> tuple[torch.Tensor, torch.Tensor]:
    blocks = torch.randint(0, 256, (r, k // 32, 16), dtype=torch.uint8, generator=gen)
    scales = torch.randint(lo, hi, (r, k // 32), dtype=torch.uint8, generator=gen)
    return blocks, scales


def assert_matches(y: torch.Tensor, x: torch.Tensor, blocks: torch.Tensor, scales: torch.Tensor) -> None:
    """y equals x @ W.T (float32 reference) within TOL of each entry's sum of |products|."""
    w = dequantize_mxfp4(blocks, scales, torch.float32)
    ref = x @ w.T
    scale = (x.double().abs() @ w.double().abs().T).float()
    err = (y - ref).abs()
    bad = err > TOL * scale + 1e-42  # the second term only for all-zero rows
    assert not bad.any(), f"max error {float((err / scale.clamp_min(1e-38)).max()):.3g} of sum |x w|"


SHAPES = [(n, r, k) for n in (1, 2, 3, 17) for r in (1, 7, 64, 96) for k in (32, 64, 96)] + [(3, 13, 2880)]


@needs_kernel
@pytest.mark.parametrize(("n", "r", "k"), SHAPES)
def test_matmul_matches_dequantized(n: int, r: int, k: int) -> None:
    gen = torch.Generator().manual_seed(n * 1000 + r * 10 + k)
    blocks, scales = packed(r, k, gen)
    x = torch.randn(n, k, generator=gen)
    for impl in ("auto", "scalar"):
        assert_matches(cpu.mxfp4_matmul(x, blocks, scales, impl=impl), x, blocks, scales)


@needs_kernel
def test_extreme_exponents() -> None:
    """Subnormal weights (scale 0..3) and huge ones (scale 230..240), alone and mixed in one row."""
    gen = torch.Generator().manual_seed(1)
    r, k = 24, 320
    blocks, scales = packed(r, k, gen)
    scales[:8] = torch.randint(0, 4, (8, k // 32), dtype=torch.uint8, generator=gen)
    scales[8:16] = torch.randint(230, 241, (8, k // 32), dtype=torch.uint8, generator=gen)
    scales[16:, ::2] = 1
    scales[16:, 1::2] = 200
    x = torch.randn(5, k, generator=gen)
    for impl in ("auto", "scalar"):
        y = cpu.mxfp4_matmul(x, blocks, scales, impl=impl)
        assert torch.isfinite(y).all()
        assert_matches(y, x, blocks, scales)
    assert (cpu.mxfp4_matmul(x, blocks[:8], scales[:8]) != 0).any()  # subnormal rows are not flushed


@needs_kernel
def test_scalar_path_forced_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    gen = torch.Generator().manual_seed(2)
    blocks, scales = packed(40, 2880, gen)
    x = torch.randn(4, 2880, generator=gen)
    fast = cpu.mxfp4_matmul(x, blocks, scales)
    monkeypatch.setenv("GPTOSS_CPU_KERNEL", "scalar")
    assert cpu.kernel_info()["impl"] == "scalar"
    slow = cpu.mxfp4_matmul(x, blocks, scales)
    assert torch.equal(slow, cpu.mxfp4_matmul(x, blocks, scales, impl="scalar"))
    scale = (x.abs() @ dequantize_mxfp4(blocks, scales, torch.float32).abs().T)
    assert ((slow - fast).abs() <= 2 * TOL * scale).all()


@needs_kernel
@pytest.mark.parametrize("impl", ["auto", "scalar"])
def test_threads_and_batch_do_not_change_bits(impl: str) -> None:
    """Each output is computed by one thread in a fixed order. A token gets the same bits in any
    batch of 1-4 tokens (the decode kernel) and in any batch of 5 or more (the prefill kernel)."""
    gen = torch.Generator().manual_seed(3)
    blocks, scales = packed(101, 2880, gen)
    x = torch.randn(30, 2880, generator=gen)
    many = cpu.mxfp4_matmul(x, blocks, scales, threads=1, impl=impl)
    for threads in (2, 3, 7):
        assert torch.equal(cpu.mxfp4_matmul(x, blocks, scales, threads=threads, impl=impl), many)
    for lo, hi in ((0, 5), (5, 11), (1, 29), (4, 30)):  # other tile and chunk boundaries
        assert torch.equal(cpu.mxfp4_matmul(x[lo:hi], blocks, scales, impl=impl), many[lo:hi])
    one = torch.cat([cpu.mxfp4_matmul(x[i:i + 1], blocks, scales, impl=impl) for i in range(4)])
    assert torch.equal(cpu.mxfp4_matmul(x[:2], blocks, scales, impl=impl), one[:2])
    assert torch.equal(cpu.mxfp4_matmul(x[1:4], blocks, scales, impl=impl), one[1:4])
    assert torch.equal(cpu.mxfp4_matmul(x[:4], blocks, scales, threads=2, impl=impl), one)
    scale = x[:4].abs() @ dequantize_mxfp4(blocks, scales, torch.float32).abs().T
    assert ((one - many[:4]).abs() <= TOL * scale).all()
    if impl == "scalar":  # one loop for every batch size
        assert torch.equal(one, many[:4])


@needs_kernel
def test_matmul_edges_and_errors() -> None:
    gen = torch.Generator().manual_seed(4)
    blocks, scales = packed(6, 64, gen)
    assert cpu.mxfp4_matmul(torch.zeros(0, 64), blocks, scales).shape == (0, 6)
    x = torch.randn(7, 128, generator=gen)[:, ::2]  # non-contiguous input
    assert_matches(cpu.mxfp4_matmul(x, blocks, scales), x.contiguous(), blocks, scales)
    out = torch.empty(7, 6)
    assert cpu.mxfp4_matmul(x, blocks, scales, out=out) is out
    with pytest.raises(ValueError, match="shape mismatch"):
        cpu.mxfp4_matmul(torch.randn(2, 32), blocks, scales)
    with pytest.raises(ValueError, match="float32"):
        cpu.mxfp4_matmul(torch.randn(2, 64, dtype=torch.bfloat16), blocks, scales)
    with pytest.raises(ValueError, match="implementation"):
        cpu.mxfp4_matmul(torch.randn(2, 64), blocks, scales, impl="avx512")


def moe_weights(e: int, h: int, i: int, dtype: torch.dtype, seed: int) -> tuple:
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape: int, s: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * s

    router_w, router_b = rnd(e, h, s=0.5).to(dtype), rnd(e).to(dtype)
    w1, w2 = quantize_mxfp4(rnd(e, 2 * i, h, s=0.3)), quantize_mxfp4(rnd(e, h, i, s=0.3))
    return router_w, router_b, w1, rnd(e, 2 * i, s=0.5).to(dtype), w2, rnd(e, h, s=0.5).to(dtype)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("experts", "top_k", "hidden", "inter"), [(8, 4, 128, 96), (6, 2, 96, 160)])
def test_moe_matches_reference(dtype: torch.dtype, experts: int, top_k: int, hidden: int, inter: int) -> None:
    rw, rb, w1, b1, w2, b2 = moe_weights(experts, hidden, inter, dtype, seed=experts)
    gen = torch.Generator().manual_seed(5)
    for n in (1, 2, 3, 9, 40):
        x = (torch.randn(n, hidden, generator=gen) * 2).to(dtype)
        ref = reference.moe(x, rw, rb, w1, b1, w2, b2, top_k, 7.0, 1.702)
        got = cpu.moe(x, rw, rb, w1, b1, w2, b2, top_k, 7.0, 1.702)
        assert got.dtype == dtype and got.shape == x.shape
        err = float((got.float() - ref.float()).abs().max() / ref.float().abs().max())
        # bf16: same rounding points as the reference, so only an accumulation-order ulp can differ.
        assert err < (TOL if dtype == torch.float32 else 2e-2), (n, err)


@needs_kernel
def test_moe_delegates_dense_weights_and_gradients() -> None:
    rw, rb, w1, b1, w2, b2 = moe_weights(4, 64, 32, torch.float32, seed=6)
    d1, d2 = dequantize_mxfp4(*w1, torch.float32), dequantize_mxfp4(*w2, torch.float32)
    x = torch.randn(5, 64)
    args = (rw, rb, d1, b1, d2, b2, 2, 7.0, 1.702)
    assert torch.equal(cpu.moe(x, *args), reference.moe(x, *args))
    xg = x.clone().requires_grad_()
    cpu.moe(xg, rw, rb, w1, b1, w2, b2, 2, 7.0, 1.702).sum().backward()  # reference path: differentiable
    assert xg.grad is not None


@needs_kernel
def test_model_forward_cpu_backend_equals_reference(tiny_checkpoint: Path) -> None:
    model = gptoss.load(tiny_checkpoint, dtype="float32")
    ids = torch.randint(0, 199998, (37,), generator=torch.Generator().manual_seed(7)).tolist()
    ref = model.logits(ids, chunk=16)
    assert ops.select_backend("cpu") is cpu and ops.backend_name() == "cpu"
    got = model.logits(ids, chunk=16)
    err = (got - ref).abs().amax(-1) / ref.abs().amax(-1)
    assert float(err.max()) < TOL
    step = model.logits(ids[:20], chunk=1)  # token-by-token decode: the 1-token kernel path
    err = (step - ref[:20]).abs().amax(-1) / ref[:20].abs().amax(-1)
    assert float(err.max()) < TOL


@needs_kernel
def test_auto_picks_cpu_where_the_kernel_builds() -> None:
    assert ops.select_backend("auto") is cpu
    assert ops.select_backend("auto", device="cuda:0") is reference
    assert ops.select_backend("reference") is reference
    with pytest.raises(ValueError, match="unknown ops backend"):
        ops.select_backend("fast")


@pytest.fixture
def no_compiler(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """A process where the kernel cannot be built: the compiler does not exist, the cache is empty."""
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("GPTOSS_CACHE_DIR", str(tmp_path / "cache"))
    cpu._reset()
    yield
    cpu._reset()  # later tests rebuild (or find) the real kernel


def test_falls_back_to_reference_without_a_compiler(no_compiler, caplog: pytest.LogCaptureFixture) -> None:
    assert not cpu.available()
    with caplog.at_level(logging.WARNING, logger="gptoss.ops"):
        assert ops.select_backend("auto") is reference
    warnings = [r.getMessage() for r in caplog.records if r.name == "gptoss.ops"]
    assert len(warnings) == 1 and "no-such-cc" in warnings[0] and "reference" in warnings[0]
    assert "\n" not in warnings[0]
    with pytest.raises(ValueError, match="'cpu' is unavailable"):
        ops.select_backend("cpu")
    with pytest.raises(cpu.KernelUnavailable):
        cpu.mxfp4_matmul(torch.randn(1, 32), *packed(2, 32, torch.Generator().manual_seed(0)))
    rw, rb, w1, b1, w2, b2 = moe_weights(4, 64, 32, torch.float32, seed=8)
    x = torch.randn(3, 64)
    args = (rw, rb, w1, b1, w2, b2, 2, 7.0, 1.702)
    assert torch.equal(cpu.moe(x, *args), reference.moe(x, *args))


def test_compile_failure_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "fake-cc"
    fake.write_text("#!/bin/sh\n[ \"$1\" = --version ] && { echo fake 1.0; exit 0; }\necho 'boom' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CC", str(fake))
    monkeypatch.setenv("GPTOSS_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(cpu.KernelUnavailable, match="boom"):
        cpu.build_kernel()
    left = [p.name for p in (tmp_path / "cache" / "kernels").iterdir() if not p.name.endswith(".lock")]
    assert left == []  # no half-written objects


@needs_kernel
def test_build_is_cached_per_source_and_flags(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GPTOSS_CACHE_DIR", str(tmp_path))
    first = cpu.build_kernel()
    assert first.parent == tmp_path / "kernels" and first.suffix == ".so"
    mtime = first.stat().st_mtime_ns
    assert cpu.build_kernel() == first and first.stat().st_mtime_ns == mtime  # not rebuilt
    monkeypatch.setattr(cpu, "CFLAGS", (*cpu.CFLAGS, "-DGPTOSS_TEST_FLAG"))
    assert cpu.build_kernel() != first  # other flags, other object


@needs_kernel
def test_cli_ops_option(tmp_path: Path) -> None:
    from gptoss.cli.main import main
    from gptoss.config import preset
    from gptoss.weights.random_ckpt import write_random_checkpoint

    ckpt = tmp_path / "ckpt"
    write_random_checkpoint(ckpt, preset("tiny", num_hidden_layers=1), "original", seed=0)
    for choice, expect in (("cpu", "cpu"), ("reference", "reference"), ("auto", "cpu")):
        out = tmp_path / f"{choice}.json"
        assert main(["bench", "--model", str(ckpt), "--prompt-tokens", "4", "--gen-tokens", "2", "--no-warmup",
                     "--ops", choice, "--json", str(out)]) == 0
        assert json.loads(out.read_text())["ops"].split()[0] == expect
