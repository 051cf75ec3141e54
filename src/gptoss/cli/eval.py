"""``gptoss eval``: evaluation suites. ``tiny`` scores a model on held-out gpt-oss-tiny corpus prompts."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from gptoss.cli.common import err_console, positive_int

EPILOG = """rows: well_formed (harmony parses cleanly, ends in <|call|>/<|return|>), python (right tool output
and number in the answer), functions (right function, exact JSON arguments), browser (searched and
cited an opened page), json (valid against the schema, values copied), effort (median reasoning
length low < medium < high). browser_fact and chat are shown without a target.

examples:
  gptoss eval tiny --n 200 --json eval.json              # the bundled gpt-oss-tiny
  gptoss eval tiny --model runs/tiny/model --n 200
  gptoss eval tiny --oracle --n 50          # replays the corpus answers: every row must be 100%
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="suite", metavar="SUITE", required=True)
    t = sub.add_parser("tiny", help="held-out gpt-oss-tiny corpus tasks through the agent loop",
                       description="Score a model on held-out gpt-oss-tiny corpus prompts (harmony, tools, "
                                   "structured output, reasoning effort).",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--model", metavar="PATH", help="checkpoint directory (default: the bundled gpt-oss-tiny)")
    t.add_argument("--oracle", action="store_true",
                   help="replay the corpus's own answers instead of a model (a self-check of the harness)")
    t.add_argument("--n", type=positive_int, default=200, help="held-out tasks per family (default: %(default)s)")
    t.add_argument("--seed", type=int, default=0, help="held-out task seed (default: %(default)s)")
    t.add_argument("--json", type=Path, metavar="OUT", help="write the scores and per-task results here")
    t.add_argument("--max-tokens", type=positive_int, default=384,
                   help="sampled tokens per task, all rounds (default: %(default)s)")
    t.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default: %(default)s)")
    t.add_argument("--batch-size", type=positive_int, default=32,
                   help="conversations decoded together (default: %(default)s)")
    t.add_argument("--sample-seed", type=int, default=0, help="sampling seed when temperature > 0")
    t.add_argument("--dtype", default="float32", choices=["bfloat16", "float32"],
                   help="activation dtype (default: %(default)s)")
    t.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: %(default)s)")
    t.add_argument("--strict", action="store_true", help="exit with status 1 when a target is missed")


def run(args: argparse.Namespace) -> int:
    from gptoss.engine.sampling import SamplingParams
    from gptoss.evals.tiny import (
        FAMILIES,
        ROW_ORDER,
        evaluate,
        heldout_tasks,
        replay_source,
        run_tasks,
        run_tasks_batched,
    )

    if args.suite != "tiny":  # pragma: no cover - argparse only offers tiny
        raise ValueError(f"unknown eval suite {args.suite!r}")
    if args.model and args.oracle:
        raise ValueError("give either --model PATH or --oracle, not both")
    params = SamplingParams(args.max_tokens, args.temperature, seed=args.sample_seed)
    tasks = heldout_tasks(args.n, args.seed)
    kept = None
    if args.oracle:
        runs = run_tasks(tasks, replay_source, params)
        label = "oracle (corpus answers)"
    else:
        import gptoss
        from gptoss.models import resolve_model

        args.model = resolve_model(args.model)
        model = gptoss.load(args.model, dtype=args.dtype, device=args.device)
        runs = run_tasks_batched(tasks, model.transformer, params, args.batch_size)
        kept = model.config.kept_token_ids
        label = str(args.model)
    t0 = time.perf_counter()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err_console, transient=True, disable=not err_console.is_terminal) as bar:
        job = bar.add_task("evaluating", total=len(tasks))
        report = evaluate(runs, kept_token_ids=kept, on_run=lambda _: bar.advance(job))
    seconds = time.perf_counter() - t0

    table = Table(title=f"gpt-oss-tiny eval: {label} ({args.n} per family x {len(FAMILIES)}, seed {args.seed})")
    for col in ("row", "n", "score", "target", ""):
        table.add_column(col, justify="left" if col in ("row", "") else "right")
    for name in ROW_ORDER:
        if name == "effort":
            m = report.effort_medians
            shown = " < ".join(f"{e} {m[e]:g}" if m[e] is not None else f"{e} -" for e in ("low", "medium", "high"))
            table.add_row("effort", str(len(tasks)), shown, "monotone", _mark(report.effort_ok))
            continue
        row = report.rows[name]
        target = f"≥{row.target:.0%}" if row.target is not None else "-"
        table.add_row(name, str(row.n), f"{row.score:.1%}", target, _mark(row.ok))
    console = Console()
    console.print(table)
    if report.unreachable:
        console.print(f"[yellow]{report.unreachable} task(s) need tokens outside the model's trimmed vocabulary[/]")
    console.print(f"{len(tasks)} tasks in {seconds:.1f}s; all targets met: {_mark(report.passed)}", highlight=False)
    if args.json:
        data = {"suite": "tiny", "model": label, "n_per_family": args.n, "seed": args.seed,
                "temperature": args.temperature, "max_tokens": args.max_tokens, "seconds": round(seconds, 2),
                **report.to_json()}
        args.json.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
        console.print(f"wrote {args.json}", highlight=False)
    return 1 if args.strict and not report.passed else 0


def _mark(ok: bool | None) -> str:
    return "" if ok is None else ("[green]yes[/]" if ok else "[red]no[/]")
