"""``gptoss train``: full-parameter training on harmony conversations (JSONL)."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import tempfile
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from gptoss.cli.common import err_console, positive_int
from gptoss.config import PRESETS

EPILOG = """data: one conversation per line, {"messages": [...]} in openai-harmony message JSON
(the format `gptoss chat` writes with /save; "content" may be a plain string). Only the
assistant messages after the last user message are learned.

examples:
  gptoss train --model /path/to/ckpt --data train.jsonl --eval-data dev.jsonl --out runs/ft1
  gptoss train --preset tiny --data train.jsonl --out runs/scratch --steps 2000 --lr 3e-3
  gptoss train ... --resume          # continue from runs/ft1/trainer_state.pt
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from gptoss.train.trainer import TrainingArgs

    p.epilog = EPILOG
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", metavar="PATH", help="checkpoint to fine-tune")
    src.add_argument("--preset", choices=sorted(PRESETS), help="train from scratch with this shape")
    p.add_argument("--layers", type=positive_int, help="with --preset: number of layers")
    p.add_argument("--trim-vocab", action="store_true",
                   help="with --preset: keep embedding rows only for ids in the data (+ harmony specials)")
    p.add_argument("--data", required=True, type=Path, help="training conversations (JSONL)")
    p.add_argument("--eval-data", type=Path, help="held-out conversations (JSONL)")
    p.add_argument("--out", required=True, dest="out_dir", help=TrainingArgs.__dataclass_fields__["out_dir"]
                   .metadata["help"])
    p.add_argument("--resume", action="store_true", help="continue from OUT/trainer_state.pt")
    for f in dataclasses.fields(TrainingArgs):
        if f.name == "out_dir":
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=f.metadata["help"])
        else:
            kind = int if isinstance(f.default, int) else float
            p.add_argument(flag, type=kind, default=f.default,
                           help=f.metadata["help"] + " (default: %(default)s)")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(args: argparse.Namespace) -> int:
    import gptoss
    from gptoss.config import preset
    from gptoss.train.data import load_jsonl
    from gptoss.train.trainer import Trainer, TrainingArgs
    from gptoss.weights.random_ckpt import write_random_checkpoint

    targs = TrainingArgs(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainingArgs)})
    data = load_jsonl(args.data)
    eval_data = load_jsonl(args.eval_data) if args.eval_data else []
    lineage = {"data": str(args.data), "data_sha256": _sha256(args.data),
               "eval_data": str(args.eval_data) if args.eval_data else None}
    if args.model:
        model = gptoss.load(args.model, dtype="float32").transformer
        lineage["base_model"] = str(args.model)
    else:
        cfg = preset(args.preset)
        if args.layers:
            cfg = dataclasses.replace(cfg, num_hidden_layers=args.layers)
        if args.trim_vocab:
            cfg = dataclasses.replace(cfg, kept_token_ids=kept_ids([*data, *eval_data]))
            lineage["kept_token_ids"] = len(cfg.kept_token_ids)
        with tempfile.TemporaryDirectory() as tmp:
            write_random_checkpoint(tmp, cfg, "original", targs.seed)
            model = gptoss.load(tmp, dtype="float32").transformer
            model = _materialise(model)
        lineage["base_model"] = f"random init, preset {args.preset}, seed {targs.seed}"
    trainer = Trainer(model, targs, lineage)
    console = Console()
    if args.resume and trainer.try_resume():
        console.print(f"resumed at step {trainer.step}", style="green")
    console.print(f"{len(data)} training conversations, {sum(e.mask.count(True) for e in data)} target tokens",
                  highlight=False)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  TextColumn("{task.fields[info]}"), console=err_console, disable=not err_console.is_terminal) as bar:
        task = bar.add_task("training", total=targs.steps, completed=trainer.step, info="")

        def on_step(log) -> None:
            info = step_info(log)
            if log.eval_loss is not None:
                if not err_console.is_terminal:
                    console.print(f"step {log.step}: {info}", highlight=False)
            bar.update(task, completed=log.step, info=info)

        trainer.train(data, eval_data, on_step)
    wdir = trainer.export()
    console.print(f"exported {wdir} (lineage in {wdir / 'lineage.json'})", highlight=False)
    return 0


def step_info(log) -> str:
    """One progress line for a training step (loss, lr, speed, and eval when it ran)."""
    info = f"loss {log.loss:.3f} lr {log.lr:.2e} {log.tokens_per_s:,.0f} tok/s"
    if log.eval_loss is not None:
        info += f" eval {log.eval_loss:.3f} acc {log.eval_accuracy:.1%}"
    return info


def kept_ids(examples) -> tuple[int, ...]:
    """Every id the data uses plus the harmony special range (199998..200018)."""
    ids = set(range(199998, 200019))
    for e in examples:
        ids.update(e.tokens)
    return tuple(sorted(ids))


def _materialise(model):
    """Copy weights out of the temporary checkpoint's memory map before it is deleted."""
    for p in list(model.parameters()) + list(model.buffers()):
        p.data = p.data.clone()
    return model
