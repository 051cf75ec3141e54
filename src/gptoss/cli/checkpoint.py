"""``gptoss checkpoint random OUT``: write a random checkpoint of a preset's shape."""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from rich.console import Console

from gptoss.cli.common import byte_progress, positive_int
from gptoss.config import PRESETS, preset
from gptoss.weights.random_ckpt import DEFAULT_SHARD_BYTES, checkpoint_nbytes, write_random_checkpoint


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    r = sub.add_parser("random", help="write random weights with the exact gpt-oss layout",
                       description="Write a checkpoint with random weights (MXFP4 experts, realistic "
                       "value scales) for tests and benchmarks. Not a usable language model.")
    r.add_argument("out", metavar="OUT", help="output directory (created; must be empty or absent)")
    r.add_argument("--preset", default="tiny", choices=sorted(PRESETS),
                   help="architecture shape (default: %(default)s)")
    r.add_argument("--layers", type=positive_int, help="override the number of layers")
    r.add_argument("--layout", default="original", choices=["original", "hf"],
                   help="OpenAI original/ layout or Hugging Face layout (default: %(default)s)")
    r.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    r.add_argument("--shard-size-gb", type=float, default=DEFAULT_SHARD_BYTES / 1024**3,
                   help="split into shards of at most this size (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} exists and is not an empty directory; choose a new path")
    cfg = preset(args.preset)
    if args.layers:
        cfg = dataclasses.replace(cfg, num_hidden_layers=args.layers)
    total = checkpoint_nbytes(cfg)
    start = time.perf_counter()
    with byte_progress(f"writing {args.preset}", total) as advance:
        wdir = write_random_checkpoint(out, cfg, args.layout, args.seed,
                                       int(args.shard_size_gb * 1024**3), advance)
    Console().print(f"wrote {args.layout} checkpoint ({args.preset}, {cfg.num_hidden_layers} layers, "
                    f"{total / 1e9:.2f} GB) to {wdir} in {time.perf_counter() - start:.1f} s", highlight=False)
    return 0
