"""``gptoss inspect PATH``: what a checkpoint is, what it costs, and whether it is sound."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.table import Table

from gptoss.cli.common import byte_progress
from gptoss.weights.checkpoint import open_checkpoint, validate
from gptoss.weights.fingerprint import fingerprint
from gptoss.weights.safetensors_io import CheckpointError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="PATH", help="checkpoint directory")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--no-hash", action="store_true", help="skip sha256 fingerprints (slow on first run)")


def describe(path: str, hash_files: bool = True) -> dict[str, Any]:
    """Everything ``inspect`` reports, as a dict. Raises CheckpointError if nothing is readable."""
    ckpt = open_checkpoint(path, strict_config=False)
    cfg = ckpt.config
    problems = []
    if cfg.unknown_keys:
        problems.append(f"{ckpt.config_path}: unknown config key(s) {', '.join(cfg.unknown_keys)}")
    try:
        validate(ckpt)
    except CheckpointError as e:
        problems.append(str(e))
    counts = cfg.param_counts()
    wb = cfg.weight_bytes()
    files = []
    total = sum(f.path.stat().st_size for f in ckpt.files)
    with byte_progress("fingerprinting", total, enabled=hash_files) as advance:
        for f in ckpt.files:
            entry: dict[str, Any] = {"file": str(f.path), "bytes": f.path.stat().st_size,
                                     "tensors": len(f.tensors)}
            if hash_files:
                entry["sha256"], entry["sha256_cached"] = fingerprint(f.path, advance)
            files.append(entry)
    return {
        "path": str(ckpt.root),
        "layout": ckpt.layout,
        "config_file": str(ckpt.config_path),
        "config": cfg.to_original_dict(),
        "parameters": {"total": counts["total"], "active_per_token": counts["active_per_token"],
                       "attention": counts["attention"], "moe": counts["moe"],
                       "embedding": counts["embedding"], "unembedding": counts["unembedding"]},
        "bytes": {"on_disk": ckpt.bytes_on_disk,
                  # Experts stay MXFP4 in memory; dense weights take 2 (bf16) or 4 (fp32) bytes.
                  "in_memory_bf16": wb["experts_mxfp4"] + wb["dense_bf16"],
                  "in_memory_fp32": wb["experts_mxfp4"] + 2 * wb["dense_bf16"],
                  "read_per_decoded_token_bf16": wb["read_per_token"]},
        "files": files,
        "problems": problems,
    }


def _size(n: int) -> str:
    return f"{n / 1024**3:.2f} GiB" if n >= 1024**3 else f"{n / 1024**2:.1f} MiB"


def _params(n: int) -> str:
    return f"{n / 1e9:.3f} B" if n >= 1e8 else f"{n / 1e6:.2f} M"


def run(args: argparse.Namespace) -> int:
    info = describe(args.path, not args.no_hash)
    if args.json:
        print(json.dumps(info, indent=2))
        return 1 if info["problems"] else 0
    console = Console()
    console.print(f"[bold]{info['path']}[/]  layout: [cyan]{info['layout']}[/]  config: {info['config_file']}")
    t = Table(title="config", show_header=False)
    for k, v in info["config"].items():
        t.add_row(k, f"{len(v)} ids (trimmed vocabulary)" if k == "kept_token_ids" else str(v))
    console.print(t)
    p, b = info["parameters"], info["bytes"]
    s = Table(title="size", show_header=False)
    s.add_row("parameters (total)", _params(p["total"]))
    s.add_row("active per token", _params(p["active_per_token"]))
    s.add_row("on disk", _size(b["on_disk"]))
    s.add_row("in memory (bf16, MXFP4 experts)", _size(b["in_memory_bf16"]))
    s.add_row("in memory (fp32, MXFP4 experts)", _size(b["in_memory_fp32"]))
    s.add_row("weights read per decoded token", _size(b["read_per_decoded_token_bf16"]))
    console.print(s)
    f = Table(title="files")
    for col in ("file", "size", "tensors", "sha256"):
        f.add_column(col)
    for e in info["files"]:
        f.add_row(e["file"], _size(e["bytes"]), str(e["tensors"]), e.get("sha256", "-"))
    console.print(f)
    if info["problems"]:
        console.print("[bold red]problems:[/]")
        for prob in info["problems"]:
            console.print(prob, markup=False, highlight=False)
        return 1
    console.print("[green]no problems found[/]")
    return 0
