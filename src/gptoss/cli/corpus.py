"""``gptoss corpus``: write the synthetic gpt-oss-tiny training corpus (harmony conversations, JSONL)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from gptoss.cli.common import positive_int

EPILOG = """Families: python (arithmetic, unit conversions), functions (developer function calls), browser
(search, open, cite), json (structured output), chat (greetings, identity, refusals). Prompts of the
two splits never coincide; the same seed always writes the same bytes.

examples:
  gptoss corpus --n 20000 --seed 0 --out train.jsonl
  gptoss corpus --n 1000 --seed 0 --split heldout --out dev.jsonl
  gptoss corpus --n 5000 --weights browser=2,chat=0.5 --out more-browsing.jsonl
  gptoss train --preset tiny --trim-vocab --data train.jsonl --eval-data dev.jsonl --out runs/tiny
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = EPILOG
    p.add_argument("--n", type=positive_int, required=True, help="number of conversations")
    p.add_argument("--seed", type=int, default=0, help="generator seed (default: %(default)s)")
    p.add_argument("--split", choices=["train", "heldout"], default="train",
                   help="which prompts to draw (default: %(default)s)")
    p.add_argument("--weights", metavar="FAMILY=W,...",
                   help="family mix, e.g. python=2,browser=1 (default: python=0.22,functions=0.25,browser=0.18,"
                        "json=0.17,chat=0.18)")
    p.add_argument("--out", type=Path, required=True, help="output JSONL file")


def run(args: argparse.Namespace) -> int:
    from gptoss.train.corpus import FAMILIES, generate_tasks, parse_weights
    from gptoss.train.corpus_io import corpus_stats, summarize, write_jsonl

    weights = parse_weights(args.weights)
    if args.out.parent and not args.out.parent.exists():
        raise ValueError(f"{args.out.parent}: no such directory")
    tasks = generate_tasks(args.n, args.seed, args.split, weights)
    write_jsonl(tasks, args.out)
    stats, ids = corpus_stats(tasks)
    table = Table(title=f"{args.out}: {len(tasks)} {args.split} conversations (seed {args.seed})")
    for col in ("family", "n", "tokens mean/max", "body mean/max", "learned mean", "think low/med/high"):
        table.add_column(col, justify="left" if col == "family" else "right")
    for fam in FAMILIES:
        s = stats.get(fam)
        if s is None:
            continue
        (tm, tx), (bm, bx), (lm, _) = summarize(s.total), summarize(s.body), summarize(s.learned)
        think = "/".join(f"{summarize(s.analysis[e])[0]:.0f}" if s.analysis[e] else "-"
                         for e in ("low", "medium", "high"))
        table.add_row(fam, str(s.n), f"{tm:.0f}/{tx}", f"{bm:.0f}/{bx}", f"{lm:.0f}", think)
    console = Console()
    console.print(table)
    console.print(f"distinct token ids: {len(ids)}\n(tokens = whole training example; body = after the system message; "
                  "learned = mean loss-masked targets; think = mean reasoning tokens at low/medium/high effort)",
                  highlight=False)
    return 0
