"""sha256 fingerprints of checkpoint files, cached by (path, size, mtime) so a 13 GB file is
hashed once."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path


def cache_dir() -> Path:
    base = os.environ.get("GPTOSS_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "gptoss")
    return Path(base)


def sha256_file(path: Path, progress: Callable[[int], None] | None = None, chunk: int = 8 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
            if progress:
                progress(len(block))
    return h.hexdigest()


def fingerprint(path: Path, progress: Callable[[int], None] | None = None) -> tuple[str, bool]:
    """(sha256 hex, whether it came from the cache)."""
    path = path.resolve()
    st = path.stat()
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
    store = cache_dir() / "fingerprints.json"
    try:
        known = json.loads(store.read_text())
    except (OSError, json.JSONDecodeError):
        known = {}
    if key in known:
        return known[key], True
    digest = sha256_file(path, progress)
    known[key] = digest
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        tmp = store.with_suffix(".tmp")
        tmp.write_text(json.dumps(known, indent=1))
        tmp.replace(store)
    except OSError:
        pass  # a read-only cache only costs a re-hash next time
    return digest, False
