"""CPU backend: the mixture of experts runs on packed MXFP4 weights, decoded inside a C kernel.

``ops.reference.moe`` decodes every selected expert to a full floating-point matrix before a
matrix-vector product; on a CPU that decode costs ~35x the product. Here the expert weights stay
packed: :func:`mxfp4_matmul` (``csrc/mxfp4_matmul.c``) decodes 32 values at a time in registers
(AVX2 + FMA when the CPU has them, a portable scalar loop otherwise) and multiplies them into all
tokens routed to that expert, so each expert's weights are read once per call, threaded over output
rows (``torch.get_num_threads()`` threads). Routing and the SwiGLU are the reference's own
functions, and activations are rounded to the input dtype at the same points as the reference, so
float32 results agree with it to rounding and bfloat16 results differ only in accumulation order.
``rms_norm`` and ``attention`` are the reference's.

The kernel is plain C loaded with ctypes (no torch headers). It is compiled on first use (about a
second) into ``kernels/`` under gptoss's per-user cache (``$GPTOSS_CACHE_DIR``, else
``$XDG_CACHE_HOME/gptoss``, else ``~/.cache/gptoss``), named by a hash of the source, the compiler
and its flags; a file lock keeps concurrent processes from compiling it twice. The object is
built without ``-march`` (the cache may be shared between machines): the AVX2 functions carry
target attributes and are chosen at run time. The compiler is ``$CC`` or ``cc``; set
``GPTOSS_CPU_KERNEL=scalar`` to force the portable path.

Library users keep the reference backend unless they choose this one::

    from gptoss import ops
    ops.select_backend("cpu")    # or "auto": "cpu" when the kernel builds, else "reference"

``gptoss`` CLI commands take ``--ops {auto,reference,cpu}`` (default ``auto``). When the kernel
cannot be built (no compiler), ``auto`` logs one warning line and keeps the reference backend;
asking for ``cpu`` explicitly is an error. Dense (unquantised) expert weights, tensors on another
device and calls that need gradients are delegated to the reference backend.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch

from gptoss.ops import reference
from gptoss.ops.reference import ExpertWeight, LinearWeight
from gptoss.weights.fingerprint import cache_dir as gptoss_cache_dir

__all__ = ["KernelUnavailable", "attention", "available", "kernel_info", "kv_write", "linear", "load_kernel", "moe",
           "mxfp4_matmul", "rms_norm"]

CSRC = Path(__file__).with_name("csrc")
SOURCES = ("mxfp4_matmul.c", "dense.c", "attention.c", "moe.c")  # compiled together into one object
HEADERS = ("common.h",)
# No -march: the AVX2 code is selected at run time, so a cached object runs on any x86-64 CPU.
CFLAGS = ("-O3", "-std=gnu11", "-fPIC", "-shared", "-fno-strict-aliasing")
OPENMP_FLAGS = ("-fopenmp",)
IMPLS = {"auto": 0, "scalar": 1, "avx2": 2}


class KernelUnavailable(RuntimeError):
    """The C kernel could not be compiled or loaded (the message says why)."""


def cache_dir() -> Path:
    """Where compiled kernels live: ``kernels/`` in gptoss's per-user cache directory."""
    return gptoss_cache_dir() / "kernels"


def _compiler() -> str:
    name = os.environ.get("CC") or "cc"
    path = shutil.which(name)
    if path is None:
        raise KernelUnavailable(f"no C compiler found ({name!r}; set CC to one)")
    return path


def _compiler_id(cc: str) -> str:
    try:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        raise KernelUnavailable(f"C compiler {cc} does not run: {e}") from None
    if out.returncode != 0:
        raise KernelUnavailable(f"C compiler {cc} does not run: {out.stderr.strip()[:200]}")
    return out.stdout.splitlines()[0] if out.stdout else ""


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (no-op where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: the atomic rename alone keeps builds safe
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _compile(cc: str, flags: tuple[str, ...], out: Path) -> str | None:
    """Compile :data:`SOURCES` to ``out`` atomically; the compiler's complaint on failure, else None.

    Each source is compiled to an object in parallel (the -O3 kernels take seconds each), then linked.
    """
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=out.name + ".") as work:
        objects = [str(Path(work) / f"{Path(f).stem}.o") for f in SOURCES]
        compile_flags = tuple(f for f in flags if f != "-shared")
        procs: list[subprocess.Popen[bytes]] = []
        try:
            procs += [subprocess.Popen([cc, *compile_flags, "-I", str(CSRC), "-c", str(CSRC / f), "-o", o],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                     for f, o in zip(SOURCES, objects, strict=True)]
            results = [(p, *p.communicate(timeout=600)) for p in procs]
            for p, stdout, stderr in results:
                if p.returncode != 0:
                    said = (stderr or stdout).decode(errors="replace").strip()
                    return (said or f"exit status {p.returncode}")[-500:]
            tmp = str(Path(work) / "kernel.so")
            proc = subprocess.run([cc, *flags, "-o", tmp, *objects, "-lm"], capture_output=True, timeout=300)
            if proc.returncode != 0:
                said = (proc.stderr or proc.stdout).decode(errors="replace").strip()
                return (said or f"exit status {proc.returncode}")[-500:]
            os.replace(tmp, out)
            return None
        except (OSError, subprocess.SubprocessError) as e:
            for p in procs:
                p.kill()
            return str(e)


def build_kernel() -> Path:
    """The path of the compiled kernel, compiling it into :func:`cache_dir` if needed.

    Tries OpenMP first and, if the compiler cannot do OpenMP, a single-threaded build.
    Raises :class:`KernelUnavailable` when no object can be built.
    """
    try:
        source = b"\0".join((CSRC / f).read_bytes() for f in (*SOURCES, *HEADERS))
    except OSError as e:
        raise KernelUnavailable(f"kernel source missing: {e}") from None
    cc = _compiler()
    ident = _compiler_id(cc)
    directory = cache_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise KernelUnavailable(f"cannot create kernel cache {directory}: {e}") from None
    errors = []
    for flags in (CFLAGS + OPENMP_FLAGS, CFLAGS):
        digest = hashlib.sha256(b"\0".join([source, cc.encode(), ident.encode(), " ".join(flags).encode()]))
        lib = directory / f"gptoss_cpu-{digest.hexdigest()[:16]}.so"
        if lib.exists():
            return lib
        try:
            with _file_lock(directory / f"{lib.name}.lock"):
                if lib.exists():  # another process built it while we waited
                    return lib
                error = _compile(cc, flags, lib)
        except OSError as e:
            error = str(e)
        if error is None:
            return lib
        errors.append(f"{cc} {' '.join(flags)}: {error.splitlines()[-1] if error else error}")
    raise KernelUnavailable("compiling the CPU kernels failed: " + "; ".join(errors))


class _Kernel:
    def __init__(self, path: Path) -> None:
        try:
            lib = ctypes.CDLL(str(path))  # ctypes releases the GIL during calls
        except OSError as e:
            raise KernelUnavailable(f"cannot load {path}: {e}") from None
        self.path = path
        p, i64, i32, f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_float
        self._grouped = lib.gptoss_mxfp4_matmul_grouped
        self._grouped.argtypes = [p, p, p, p, i64, p, p, i64, i64, i32, i32]
        self._grouped.restype = i32
        self._linear = lib.gptoss_linear
        self._linear.argtypes = [p, i32, i64, i64, p, i32, p, p, i32, p, i32, i64, i32, i32]
        self._linear.restype = i32
        self._rms_norm = lib.gptoss_rms_norm
        self._rms_norm.argtypes = [p, i32, p, f32, p, i64, i64]
        self._rms_norm.restype = None
        self._attention = lib.gptoss_attention
        self._attention.argtypes = [p, i32, i64, i64, i64, i64, i64, p, p, i32, i64, i64, i64, p, i64, p, p, i64, f32,
                                    p, i32, i32]
        self._attention.restype = i32
        self._moe = lib.gptoss_moe
        self._moe.argtypes = [p, i32, i64, i64, p, p, i32, i64, i64, p, p, p, p, p, p, i32, i64, f32, f32, p, i32, i32]
        self._moe.restype = i32
        self._kv_write = lib.gptoss_kv_write
        self._kv_write.argtypes = [p, p, p, i64, i64, i64, i64, p, p, p, i64, i64, p, i64, i64, p, i64, i64, i64, i64]
        self._kv_write.restype = i64
        self._rope = lib.gptoss_rope
        self._rope.argtypes = [p, i32, i64, i64, i64, i64, p, p]
        self._rope.restype = None
        self.avx2 = bool(lib.gptoss_mxfp4_has_avx2())
        self.openmp = bool(lib.gptoss_mxfp4_has_openmp())

    def grouped(self, x: torch.Tensor, blocks: torch.Tensor, scales: torch.Tensor, experts: torch.Tensor,
                counts: torch.Tensor, out: torch.Tensor, threads: int, impl: int) -> None:
        """No checks: the callers validate shapes, dtypes, devices and contiguity."""
        r, g = blocks.shape[-3], blocks.shape[-2]
        if self._grouped(x.data_ptr(), blocks.data_ptr(), scales.data_ptr(), out.data_ptr(), experts.numel(),
                         experts.data_ptr(), counts.data_ptr(), r, g, threads, impl) < 0:
            raise MemoryError("mxfp4 kernel: could not allocate its buffers")

    def linear(self, x: torch.Tensor, w: torch.Tensor, wscale: torch.Tensor | None, bias: torch.Tensor | None,
               out: torch.Tensor, threads: int, impl: int) -> None:
        """x [n, K] (f32/bf16), w [R, K] (f32/bf16/int8) contiguous; out [n, R] f32/bf16. No checks."""
        n, k = x.shape
        if self._linear(x.data_ptr(), _TYPES[x.dtype], n, k, w.data_ptr(), _TYPES[w.dtype],
                        None if wscale is None else wscale.data_ptr(), None if bias is None else bias.data_ptr(),
                        _TYPES[bias.dtype] if bias is not None else 0, out.data_ptr(), _TYPES[out.dtype],
                        w.shape[0], threads, impl) < 0:
            raise MemoryError("linear kernel: could not allocate its buffers")


_TYPES = {torch.float32: 0, torch.bfloat16: 1, torch.int8: 2}


_state: dict[str, _Kernel | KernelUnavailable | None] = {"kernel": None}


def load_kernel() -> _Kernel:
    """The loaded kernel (built on first use); raises :class:`KernelUnavailable` (remembered)."""
    k = _state["kernel"]
    if k is None:
        try:
            k = _Kernel(build_kernel())
        except KernelUnavailable as e:
            k = e
        _state["kernel"] = k
    if isinstance(k, KernelUnavailable):
        raise k
    return k


def available() -> bool:
    """Whether the C kernel builds and loads here (tries once per process)."""
    try:
        load_kernel()
    except KernelUnavailable:
        return False
    return True


def kernel_info() -> dict[str, object]:
    """Where the kernel lives and which path it takes (raises KernelUnavailable)."""
    k = load_kernel()
    scalar = _impl() == "scalar" or not k.avx2
    return {"path": str(k.path), "avx2": k.avx2, "openmp": k.openmp, "impl": "scalar" if scalar else "avx2"}


def _impl(impl: str | None = None) -> str:
    impl = impl or os.environ.get("GPTOSS_CPU_KERNEL") or "auto"
    if impl not in IMPLS:
        raise ValueError(f"unknown MXFP4 kernel implementation {impl!r}; choose from {', '.join(IMPLS)}")
    return impl


def _reset() -> None:
    """Forget the loaded kernel (tests change the compiler or cache directory)."""
    _state["kernel"] = None


def _check_packed(blocks: torch.Tensor, scales: torch.Tensor, experts: bool) -> None:
    lead = 1 if experts else 0
    if (blocks.dim() != 3 + lead or scales.dim() != 2 + lead or blocks.shape[-1] != 16
            or tuple(scales.shape) != tuple(blocks.shape[:-1])):
        raise ValueError(f"expected blocks [{'E, ' * lead}R, G, 16] and scales [{'E, ' * lead}R, G]; got "
                         f"{tuple(blocks.shape)}, {tuple(scales.shape)}")
    if blocks.dtype != torch.uint8 or scales.dtype != torch.uint8:
        raise ValueError(f"expected uint8 blocks and scales; got {blocks.dtype}, {scales.dtype}")
    if blocks.device.type != "cpu" or scales.device.type != "cpu":
        raise ValueError("the MXFP4 kernel runs on CPU tensors only")


def mxfp4_matmul(x: torch.Tensor, blocks: torch.Tensor, scales: torch.Tensor, *, out: torch.Tensor | None = None,
                 threads: int | None = None, impl: str | None = None) -> torch.Tensor:
    """``x @ W.T`` for MXFP4-packed ``W`` without materialising ``W``.

    Args:
        x: float32 ``[N, K]`` on the CPU (made contiguous if needed).
        blocks: uint8 ``[R, K/32, 16]``; scales: uint8 ``[R, K/32]`` (one expert's weight).
        out: optional contiguous float32 ``[N, R]`` to write into.
        threads: worker threads (default ``torch.get_num_threads()``); results do not depend on it.
        impl: ``"auto"`` (default; or ``$GPTOSS_CPU_KERNEL``), ``"avx2"`` or ``"scalar"``.

    Returns:
        float32 ``[N, R]``.
    """
    k = load_kernel()
    impl = _impl(impl)
    _check_packed(blocks, scales, experts=False)
    r, g = blocks.shape[0], blocks.shape[1]
    if x.dim() != 2 or x.shape[1] != 32 * g:
        raise ValueError(f"shape mismatch: x {tuple(x.shape)}, blocks {tuple(blocks.shape)}")
    if x.dtype != torch.float32 or x.device.type != "cpu":
        raise ValueError(f"expected a float32 CPU x; got {x.dtype} on {x.device}")
    n = x.shape[0]
    if out is None:
        out = torch.empty(n, r, dtype=torch.float32)
    elif out.shape != (n, r) or out.dtype != torch.float32 or not out.is_contiguous() or out.device.type != "cpu":
        raise ValueError(f"out must be a contiguous float32 CPU tensor of shape {(n, r)}")
    if n and r:
        k.grouped(x.contiguous(), blocks.contiguous(), scales.contiguous(), torch.zeros(1, dtype=torch.int64),
                  torch.tensor([n]), out, threads or torch.get_num_threads(), IMPLS[impl])
    return out


def _needs_grad(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def moe(
    x: torch.Tensor,
    router_w: torch.Tensor,
    router_b: torch.Tensor,
    w1: ExpertWeight,
    b1: torch.Tensor,
    w2: ExpertWeight,
    b2: torch.Tensor,
    top_k: int,
    limit: float,
    alpha: float,
) -> torch.Tensor:
    """:func:`gptoss.ops.reference.moe` with packed experts multiplied by the C kernel.

    The whole block is one C call (``csrc/moe.c``): routing, the (token, expert) pairs sorted by
    expert (tokens in order within an expert, as the reference visits them), so each selected
    expert's packed weights are read once per call whatever the token count, one grouped product
    per projection for all experts, the SwiGLU and the weighted sum, rounded where the reference
    rounds.
    """
    if (not isinstance(w1, tuple) or not isinstance(w2, tuple) or x.device.type != "cpu"
            or _needs_grad(x, router_w, router_b, b1, b2) or not available()):
        return reference.moe(x, router_w, router_b, w1, b1, w2, b2, top_k, limit, alpha)
    k = load_kernel()
    impl, threads = IMPLS[_impl()], torch.get_num_threads()
    (blocks1, scales1), (blocks2, scales2) = w1, w2
    for blocks, scales in w1, w2:
        _check_packed(blocks, scales, experts=True)
    if (blocks1.shape[-2] * 32 != x.shape[-1] or blocks2.shape[-3] != x.shape[-1]
            or blocks1.shape[-3] != 2 * blocks2.shape[-2] * 32):
        raise ValueError(f"expert shapes {tuple(blocks1.shape)}, {tuple(blocks2.shape)} do not fit x {tuple(x.shape)}")
    blocks1, scales1, blocks2, scales2 = (t.contiguous() for t in (blocks1, scales1, blocks2, scales2))

    dt = x.dtype
    if (dt not in _FLOAT or router_w.dtype != dt or router_b.dtype != dt or b1.dtype != b2.dtype
            or b1.dtype not in _FLOAT):
        return reference.moe(x, router_w, router_b, w1, b1, w2, b2, top_k, limit, alpha)
    xc = x.contiguous()
    rw, rb, c1, c2 = router_w.contiguous(), router_b.contiguous(), b1.contiguous(), b2.contiguous()
    out = torch.empty_like(xc)
    rc = k._moe(xc.data_ptr(), _TYPES[dt], x.shape[0], x.shape[1], rw.data_ptr(), rb.data_ptr(), _TYPES[dt],
                rw.shape[0], top_k, blocks1.data_ptr(), scales1.data_ptr(), c1.data_ptr(), blocks2.data_ptr(),
                scales2.data_ptr(), c2.data_ptr(), _TYPES[c1.dtype], blocks2.shape[-2] * 32, limit, alpha,
                out.data_ptr(), threads, impl)
    if rc == -2:
        raise ValueError(f"moe: top_k {top_k} with {rw.shape[0]} experts, hidden {x.shape[1]}: unsupported shapes")
    if rc < 0:
        raise MemoryError("moe kernel: could not allocate its buffers")
    return out


_FLOAT = (torch.float32, torch.bfloat16)


def _usable(*tensors: torch.Tensor) -> bool:
    """Whether the C kernels may run: CPU tensors, no gradients wanted, the kernel builds.
    Called for every op, so the cheap tests come first."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    return all(t.is_cpu for t in tensors) and (isinstance(_state["kernel"], _Kernel) or available())


def linear(x: torch.Tensor, weight: LinearWeight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`gptoss.ops.reference.linear` in C: bf16/float32 weights or int8 rows with float32 scales.

    One or a few tokens stream every weight row once (memory-bound decoding); more tokens run the
    panel GEMM (weights converted to float32 PANEL rows at a time, never as a whole matrix).
    """
    w, wscale = weight if isinstance(weight, tuple) else (weight, None)
    tensors = (x, w) if bias is None else (x, w, bias)
    if (x.dtype not in _FLOAT or w.dtype not in (*_FLOAT, torch.int8) or (bias is not None and bias.dtype not in _FLOAT)
            or (wscale is None) != (w.dtype != torch.int8) or not _usable(*tensors)):
        return reference.linear(x, weight, bias)
    r, k = w.shape
    if x.shape[-1] != k or (bias is not None and bias.shape != (r,)) or (wscale is not None and wscale.shape != (r,)):
        raise ValueError(f"linear: x {tuple(x.shape)} does not fit weight {tuple(w.shape)}")
    x2 = x.reshape(-1, k).contiguous()
    out = torch.empty(x2.shape[0], r, dtype=x.dtype)
    if wscale is not None and (wscale.dtype != torch.float32 or not wscale.is_contiguous()):
        wscale = wscale.float().contiguous()
    load_kernel().linear(x2, w.contiguous(), wscale, None if bias is None else bias.contiguous(), out,
                         torch.get_num_threads(), IMPLS[_impl()])
    return out.view(*x.shape[:-1], r)


def rms_norm(x: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    """:func:`gptoss.ops.reference.rms_norm` in one C pass (float32 math, rounded to x's dtype)."""
    if x.dtype not in _FLOAT or scale.dtype != torch.float32 or scale.shape != x.shape[-1:] or not _usable(x, scale):
        return reference.rms_norm(x, scale, eps)
    xc = x.contiguous()
    out = torch.empty_like(xc)
    h = x.shape[-1]
    load_kernel()._rms_norm(xc.data_ptr(), _TYPES[x.dtype], scale.contiguous().data_ptr(), eps, out.data_ptr(),
                            xc.numel() // h if h else 0, h)
    return out


def rotary(x: torch.Tensor, heads: int, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """:func:`gptoss.ops.reference.rotary` in C, in place on x (the fresh qkv projection)."""
    b, t, w = x.shape
    d = 2 * cos.shape[-1]
    if (x.dtype not in _FLOAT or x.stride(-1) != 1 or x.stride(0) != t * x.stride(1) or heads * d > w
            or cos.shape != (b, t, d // 2) or cos.dtype != torch.float32 or not _usable(x, cos, sin)):
        return reference.rotary(x, heads, cos, sin)
    c, s = cos.contiguous(), sin.contiguous()
    load_kernel()._rope(x.data_ptr(), _TYPES[x.dtype], b * t, x.stride(1), heads, d, c.data_ptr(), s.data_ptr())
    return x


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sinks: torch.Tensor, q_pos: torch.Tensor,
              k_pos: torch.Tensor, window: int | None, scale: float) -> torch.Tensor:
    """:func:`gptoss.ops.reference.attention` in C, reading ``k``/``v`` in place: any batch and slot
    strides (cache views, a ring buffer in slot order), only the visible keys of each query."""
    b, t, hkv, g, d = q.shape
    s = k.shape[1]
    if (q.dtype not in _FLOAT or k.dtype not in _FLOAT or v.dtype != k.dtype or k.shape != (b, s, hkv, d)
            or v.shape != k.shape or k.stride() != v.stride() or k.stride()[2:] != (d, 1)
            or k_pos.shape != (b, s) or k_pos.dtype != torch.int64 or not _usable(q, k, v, sinks, k_pos)):
        return reference.attention(q, k, v, sinks, q_pos, k_pos, window, scale)
    qc = q if q.is_contiguous() else q.contiguous()
    kp = k_pos if k_pos.stride(-1) == 1 else k_pos.contiguous()
    qp = q_pos if q_pos.dtype == torch.int64 and q_pos.is_contiguous() else q_pos.to(torch.int64).contiguous()
    sk = sinks if sinks.dtype == torch.float32 and sinks.is_contiguous() else sinks.float().contiguous()
    out = torch.empty(b, t, hkv * g * d, dtype=q.dtype)
    if load_kernel()._attention(qc.data_ptr(), _TYPES[q.dtype], b, t, hkv, g, d, k.data_ptr(), v.data_ptr(),
                                _TYPES[k.dtype], k.stride(0), k.stride(1), s, kp.data_ptr(), kp.stride(0),
                                qp.data_ptr(), sk.data_ptr(), window or 0, scale, out.data_ptr(),
                                torch.get_num_threads(), IMPLS[_impl()]) < 0:
        raise MemoryError("attention kernel: could not allocate its buffers")
    return out


def kv_write(k_cache: torch.Tensor, v_cache: torch.Tensor, pos_cache: torch.Tensor, lengths: torch.Tensor,
             k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor, ring: bool) -> tuple[torch.Tensor, int]:
    """:func:`gptoss.ops.reference.kv_write` in one C call (a few row copies) instead of a dozen small tensor
    ops per layer and step."""
    b, t = pos.shape
    e = k_cache.shape[2] * k_cache.shape[3]
    if (k.dtype != k_cache.dtype or v.dtype != v_cache.dtype or k_cache.dtype != v_cache.dtype
            or not (k_cache.is_contiguous() and v_cache.is_contiguous() and pos_cache.is_contiguous())
            or pos_cache.dtype != torch.int64 or pos.dtype != torch.int64 or lengths.dtype != torch.int64
            or k.shape != (b, t, *k_cache.shape[2:]) or v.shape != k.shape
            or k.stride()[2:] != (k.shape[3], 1) or v.stride()[2:] != (v.shape[3], 1)
            or not lengths.is_contiguous() or not _usable(k_cache, v_cache, pos_cache, lengths, k, v, pos)):
        return reference.kv_write(k_cache, v_cache, pos_cache, lengths, k, v, pos, ring)
    new_lengths = torch.empty_like(lengths)
    most = load_kernel()._kv_write(k_cache.data_ptr(), v_cache.data_ptr(), pos_cache.data_ptr(), b, k_cache.shape[1],
                                   e, k_cache.element_size(), lengths.data_ptr(), new_lengths.data_ptr(), k.data_ptr(),
                                   k.stride(0), k.stride(1), v.data_ptr(), v.stride(0), v.stride(1), pos.data_ptr(),
                                   pos.stride(0), pos.stride(1), t, int(ring))
    return new_lengths, int(most)
