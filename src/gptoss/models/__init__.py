"""Where models come from: an explicit path, or the bundled gpt-oss-tiny playground model.

The bundled model lives in this package (``gptoss/models/gpt-oss-tiny/``), written by ``gptoss train-tiny``
in the project's checkpoint layout plus a ``SHA256SUMS`` manifest that is checked before every use.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from gptoss.weights.safetensors_io import CheckpointError

BUNDLED_NAME = "gpt-oss-tiny"
BUNDLED_DIR = Path(__file__).parent / BUNDLED_NAME
MANIFEST = "SHA256SUMS"


def write_manifest(root: Path) -> Path:
    """``SHA256SUMS`` (sha256sum format) over every file below ``root``."""
    lines = []
    for f in sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST):
        lines.append(f"{hashlib.sha256(f.read_bytes()).hexdigest()}  {f.relative_to(root).as_posix()}")
    (root / MANIFEST).write_text("\n".join(lines) + "\n")
    return root / MANIFEST


def verify_manifest(root: Path) -> None:
    """Raise CheckpointError naming the first file whose sha256 does not match the manifest."""
    manifest = root / MANIFEST
    if not manifest.is_file():
        raise CheckpointError(f"{manifest}: manifest missing; reinstall gptoss")
    for line in manifest.read_text().splitlines():
        digest, _, name = line.partition("  ")
        path = root / name
        if not path.is_file():
            raise CheckpointError(f"{path}: listed in {manifest} but missing; reinstall gptoss")
        if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            raise CheckpointError(f"{path}: sha256 does not match {manifest}; the file is corrupt")


def default_model_path(root: Path | None = None) -> Path:
    """The bundled model's directory, verified against its manifest (CheckpointError if missing or corrupt)."""
    root = BUNDLED_DIR if root is None else Path(root)
    if not (root / MANIFEST).is_file():
        raise CheckpointError(f"no --model given and the bundled {BUNDLED_NAME} is not installed at "
                              f"{root}; pass --model PATH (or rebuild it with `gptoss train-tiny`)")
    verify_manifest(root)
    return root


def resolve_model(path: str | None) -> str:
    """An explicit path as given, else the bundled model (verified against its manifest)."""
    return path if path else str(default_model_path())
