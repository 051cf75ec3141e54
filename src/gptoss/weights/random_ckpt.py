"""Write random gpt-oss checkpoints of any shape, in either layout, for tests and benchmarks.

Values have realistic scales: dense weights ~ N(0, 1/fan_in), router logits well separated,
mlp1 activations large enough to hit the +-7 SwiGLU clamps, sizeable sinks. Expert weights are
genuine MXFP4: codes drawn from the distribution a quantised Gaussian has, per-block E8M0
scales around the target magnitude. Tensors are generated and written one at a time, so a
20b-shaped checkpoint never sits in memory.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import torch

from gptoss.config import ModelConfig
from gptoss.weights.checkpoint import INDEX_NAME, expected_tensors
from gptoss.weights.mxfp4 import FP4_VALUES, SCALE_BIAS
from gptoss.weights.remap import native_to_hf
from gptoss.weights.safetensors_io import SafetensorsWriter

DEFAULT_SHARD_BYTES = 5 * 1024**3
Progress = Callable[[int], None]


def _code_table(gen: torch.Generator) -> tuple[torch.Tensor, float]:
    """A 65536-entry table of FP4 codes distributed like a quantised N(0, 2.2) (block max ~6),
    and the std of the decoded values (before the block scale)."""
    x = torch.randn(1 << 16, generator=gen, dtype=torch.float64) * 2.2
    lut = torch.tensor(FP4_VALUES, dtype=torch.float64)
    code = (x.unsqueeze(-1) - lut).abs().argmin(-1).to(torch.uint8)  # nearest E2M1 value
    return code, float(lut[code.long()].std())


class _Sampler:
    def __init__(self, seed: int) -> None:
        self.gen = torch.Generator().manual_seed(seed)
        self.codes, self.code_std = _code_table(self.gen)

    def normal(self, shape: tuple[int, ...], std: float, mean: float = 0.0) -> torch.Tensor:
        return (torch.randn(shape, generator=self.gen) * std + mean).to(torch.bfloat16)

    def mxfp4(self, shape: tuple[int, ...], std: float, chunk: int = 1 << 24) -> tuple[torch.Tensor, torch.Tensor]:
        """Packed blocks ``shape`` (..., G, 16) and scales (..., G) whose decoded std is ~``std``."""
        n = math.prod(shape)
        blocks = torch.empty(n, dtype=torch.uint8)
        for i in range(0, n, chunk):
            m = min(chunk, n - i)
            lo = self.codes[torch.randint(0, 1 << 16, (m,), generator=self.gen)]
            hi = self.codes[torch.randint(0, 1 << 16, (m,), generator=self.gen)]
            blocks[i:i + m] = lo | (hi << 4)
        base = SCALE_BIAS + round(math.log2(std / self.code_std))
        jitter = torch.randint(-1, 2, shape[:-1], generator=self.gen)  # blocks differ in scale
        scales = (base + jitter).clamp(0, 254).to(torch.uint8)
        return blocks.view(shape), scales


def _generate(name: str, shape: tuple[int, ...], cfg: ModelConfig, s: _Sampler,
              cache: dict[str, torch.Tensor]) -> torch.Tensor:
    """One native tensor. MXFP4 blocks/scales are produced together (cached for the pair)."""
    h, i = cfg.hidden_size, cfg.intermediate_size
    if name.endswith((".blocks", ".scales")):
        stem = name.rsplit(".", 1)[0]
        if stem not in cache:
            fan_in = h if "mlp1" in stem else i
            # mlp1: pre-activations of std ~3 so some exceed the +-7 clamp; mlp2: unit gain.
            std = (3.0 if "mlp1" in stem else 1.0) / math.sqrt(fan_in)
            blocks_shape = expected_tensors_cache(cfg)[stem + ".blocks"][0]
            cache[stem + ".blocks"], cache[stem + ".scales"] = s.mxfp4(blocks_shape, std)
        return cache.pop(name)
    if name == "embedding.weight":
        return s.normal(shape, 1.0)
    if name == "unembedding.weight":
        return s.normal(shape, 1.0 / math.sqrt(h))
    if name.endswith(".scale"):
        return s.normal(shape, 0.1, 1.0)
    if name.endswith(".sinks"):
        return s.normal(shape, 1.0, 1.0)
    if name.endswith(".gate.weight"):
        return s.normal(shape, 2.0 / math.sqrt(h))  # router logits of std ~2: ties are unlikely
    if name.endswith(".weight"):
        return s.normal(shape, 1.0 / math.sqrt(shape[1]))
    return s.normal(shape, 0.1)  # biases


_EXPECTED: dict[ModelConfig, dict] = {}


def expected_tensors_cache(cfg: ModelConfig) -> dict[str, tuple[tuple[int, ...], bool]]:
    if cfg not in _EXPECTED:
        _EXPECTED[cfg] = expected_tensors(cfg)
    return _EXPECTED[cfg]


def _native_dtype(packed: bool) -> torch.dtype:
    return torch.uint8 if packed else torch.bfloat16


def write_random_checkpoint(
    out: str | Path,
    cfg: ModelConfig,
    layout: str = "original",
    seed: int = 0,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    progress: Progress | None = None,
) -> Path:
    """Write a random checkpoint; returns the directory holding its config.json.

    ``original`` writes ``OUT/original/{config.json,dtypes.json,model.safetensors}`` (sharded as
    ``model--0000k-of-0000n.safetensors`` past ``shard_bytes``); ``hf`` writes ``OUT/config.json``
    and ``model.safetensors`` or ``model-0000k-of-0000n.safetensors`` plus the index json.
    """
    if layout not in ("original", "hf"):
        raise ValueError(f"layout must be 'original' or 'hf', got {layout!r}")
    out = Path(out)
    wdir = out / "original" if layout == "original" else out
    wdir.mkdir(parents=True, exist_ok=True)
    expected = expected_tensors_cache(cfg)
    # Entries in file order: (file name, native name, part, dtype, shape)
    entries: list[tuple[str, str | None, torch.dtype, tuple[int, ...]]] = []
    q, kv = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
    part_rows = {"q": q, "k": kv, "v": kv}
    for native, (shape, packed) in expected.items():
        if layout == "original":
            entries.append((native, None, _native_dtype(packed), shape))
            continue
        for hf_name, part in native_to_hf(native):
            shp = shape if part is None else (part_rows[part], *shape[1:])
            entries.append((hf_name, part, _native_dtype(packed), shp))
    # Shard by size, keeping file order.
    shards: list[list[int]] = [[]]
    size = 0
    for j, (_, _, dtype, shape) in enumerate(entries):
        nbytes = math.prod(shape) * dtype.itemsize
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(j)
        size += nbytes
    n = len(shards)
    if n == 1:
        names = ["model.safetensors"]
    elif layout == "original":
        names = [f"model--{k + 1:05d}-of-{n:05d}.safetensors" for k in range(n)]
    else:
        names = [f"model-{k + 1:05d}-of-{n:05d}.safetensors" for k in range(n)]

    s = _Sampler(seed)
    cache: dict[str, torch.Tensor] = {}
    by_native: dict[str, torch.Tensor] = {}
    native_of = {}
    for native in expected:
        if layout == "original":
            native_of[native] = native
        else:
            for hf_name, _ in native_to_hf(native):
                native_of[hf_name] = native
    weight_map = {}
    total = 0
    for fname, idxs in zip(names, shards, strict=True):
        writer = SafetensorsWriter(wdir / fname, [(entries[j][0], entries[j][2], entries[j][3]) for j in idxs])
        for j in idxs:
            name, part, _, shape = entries[j]
            native = native_of[name]
            if part is None:
                t = _generate(native, expected[native][0], cfg, s, cache)
            else:
                if native not in by_native:
                    by_native[native] = _generate(native, expected[native][0], cfg, s, cache)
                full = by_native[native]
                start = {"q": 0, "k": q, "v": q + kv}[part]
                t = full[start:start + part_rows[part]]
                if part == "v":
                    del by_native[native]
            writer.write(name, t)
            weight_map[name] = fname
            nbytes = t.numel() * t.element_size()
            total += nbytes
            if progress:
                progress(nbytes)
        writer.close()
    if layout == "original":
        (wdir / "config.json").write_text(json.dumps(cfg.to_original_dict(), indent=2) + "\n")
        dtypes = {name: ("FP4" if name.endswith(".blocks") else "UE8" if name.endswith(".scales") else "BF16")
                  for name, _, _, _ in entries}
        (wdir / "dtypes.json").write_text(json.dumps(dtypes, indent=2) + "\n")
    else:
        (wdir / "config.json").write_text(json.dumps(cfg.to_hf_dict(), indent=2) + "\n")
    if n > 1:
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (wdir / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
    return wdir


def checkpoint_nbytes(cfg: ModelConfig) -> int:
    return sum(math.prod(shape) * _native_dtype(p).itemsize for shape, p in expected_tensors_cache(cfg).values())
