"""Minimal safetensors reader (memory-mapped, zero-copy) and streaming writer.

The ``safetensors`` package copies on ``get_tensor``; reading the header ourselves and viewing
the mapped file with ``torch.frombuffer`` keeps every weight in the page cache exactly once.
The writer streams tensor by tensor, so a 13 GB checkpoint never sits in RAM (SPEC §2.1).
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

DTYPES: dict[str, torch.dtype] = {
    "BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64,
    "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16, "I32": torch.int32, "I64": torch.int64,
    "BOOL": torch.bool,
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
MAX_HEADER = 100 * 1024 * 1024


class CheckpointError(ValueError):
    """A checkpoint problem, always naming the file (and tensor) involved."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int  # absolute file offsets
    end: int
    path: Path

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


class SafetensorsFile:
    """One ``.safetensors`` file: its validated header and a lazily created private mapping."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.tensors: dict[str, TensorInfo] = {}
        self.metadata: dict[str, str] = {}
        self._mmap: mmap.mmap | None = None
        self._read_header()

    def _fail(self, msg: str) -> CheckpointError:
        return CheckpointError(f"{self.path}: {msg}")

    def _read_header(self) -> None:
        size = self.path.stat().st_size
        if size < 8:
            raise self._fail(f"file is truncated ({size} bytes): not a safetensors file")
        with open(self.path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > MAX_HEADER or 8 + n > size:
                raise self._fail(f"header length {n} does not fit a file of {size} bytes "
                                 "(truncated or not a safetensors file)")
            raw = f.read(n)
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise self._fail(f"corrupt header (invalid JSON: {e})") from None
        if not isinstance(header, dict):
            raise self._fail("corrupt header (not a JSON object)")
        self.metadata = header.pop("__metadata__", None) or {}
        base = 8 + n
        for name, meta in header.items():
            try:
                dtype, shape, (begin, end) = meta["dtype"], tuple(meta["shape"]), meta["data_offsets"]
            except (KeyError, TypeError, ValueError):
                raise self._fail(f"tensor {name!r}: malformed header entry {meta!r}") from None
            if dtype not in DTYPES:
                raise self._fail(f"tensor {name!r}: unsupported dtype {dtype!r}")
            info = TensorInfo(name, dtype, shape, base + begin, base + end, self.path)
            expected = info.numel * DTYPES[dtype].itemsize
            if end - begin != expected or begin < 0:
                raise self._fail(f"tensor {name!r}: data_offsets [{begin}, {end}] hold {end - begin} "
                                 f"bytes but {dtype}{list(shape)} needs {expected} (corrupt header)")
            if base + end > size:
                raise self._fail(f"tensor {name!r} ends at byte {base + end} but the file has only "
                                 f"{size} bytes (truncated file; re-download or re-copy it)")
            self.tensors[name] = info

    def get(self, name: str) -> torch.Tensor:
        """A tensor viewing the mapped file (copy-on-write: never modifies the file)."""
        info = self.tensors[name]
        if self._mmap is None:
            with open(self.path, "rb") as f:
                self._mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        dtype = DTYPES[info.dtype]
        if info.numel == 0:
            return torch.empty(info.shape, dtype=dtype)
        t = torch.frombuffer(self._mmap, dtype=dtype, count=info.numel, offset=info.begin)
        return t.view(info.shape)


class SafetensorsWriter:
    """Write a safetensors file tensor by tensor, in the order the header declares them."""

    def __init__(self, path: str | os.PathLike, entries: Iterable[tuple[str, torch.dtype, tuple[int, ...]]],
                 metadata: dict[str, str] | None = None) -> None:
        self.path = Path(path)
        header: dict[str, object] = {"__metadata__": metadata or {"format": "pt"}}
        self.order: list[tuple[str, torch.dtype, tuple[int, ...], int]] = []
        offset = 0
        for name, dtype, shape in entries:
            nbytes = dtype.itemsize
            for s in shape:
                nbytes *= s
            header[name] = {"dtype": DTYPE_NAMES[dtype], "shape": list(shape),
                            "data_offsets": [offset, offset + nbytes]}
            self.order.append((name, dtype, tuple(shape), nbytes))
            offset += nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # keep data 8-byte aligned
        self._f = open(self.path, "wb")
        self._f.write(struct.pack("<Q", len(raw)) + raw)
        self._next = 0
        self.total_bytes = offset

    def write(self, name: str, tensor: torch.Tensor) -> None:
        exp_name, dtype, shape, _ = self.order[self._next]
        assert name == exp_name and tensor.dtype == dtype and tuple(tensor.shape) == shape, (
            f"{name=} {exp_name=} {tensor.dtype=} {dtype=} {tuple(tensor.shape)=} {shape=}")
        self._f.write(tensor.detach().contiguous().cpu().view(torch.uint8).numpy().tobytes())
        self._next += 1

    def close(self) -> None:
        assert self._next == len(self.order), f"{self._next=} of {len(self.order)} tensors written"
        self._f.close()
