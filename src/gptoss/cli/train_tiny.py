"""``gptoss train-tiny``: rebuild the bundled gpt-oss-tiny playground model, reproducibly under a seed.

Generates the synthetic harmony corpus (:mod:`gptoss.train.corpus`), trains a small model of the exact gpt-oss
architecture from scratch with :mod:`gptoss.train.trainer` (the module that fine-tunes real checkpoints), and
exports it -- MXFP4 experts, trimmed vocabulary -- in the project's checkpoint layout with a sha256 manifest.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from gptoss.cli.common import err_console, non_negative_int, positive_int
from gptoss.cli.train import step_info

# The recipe of the bundled checkpoint; `gptoss train-tiny` with no options rebuilds it.
SHAPE = {"layers": 4, "hidden": 256, "heads": 8, "kv_heads": 2, "head_dim": 32, "experts": 8, "top_k": 2,
         "intermediate": 256, "window": 128, "context": 4096}
RECIPE = {"seed": 0, "conversations": 24000, "steps": 2150, "batch_size": 16, "lr": 1e-3, "init": "torch",
          "shared_digits": True, "curriculum": 400, "copy_warmup": 400, "shared_codes": True,
          "lowercase_codes": True, "paired_codes": True,
          "curriculum_weights": "python=1,functions=0,browser=0,json=0,chat=0,echo=3",
          "weights": "python=0.13,functions=0.52,browser=0.15,json=0.13,chat=0.1,echo=0.12"}
EVAL_CONVERSATIONS = 96
SHARD = 1000  # conversations per corpus shard (shards are seeded separately, so workers don't change the data)

def generator_fingerprint() -> str:
    """sha256 of the corpus generator's and encoder's sources: a cached corpus is rebuilt whenever they change
    (a hand-bumped version number, as before, is easy to forget)."""
    import hashlib

    from gptoss.train import corpus, data, world

    digest = hashlib.sha256()
    for module in (world, corpus, data):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()


EPILOG = """The defaults are the recipe of the bundled model; the same options write the same bytes.
Budget: --steps fixes the run; --minutes times a few steps first and picks --steps to fit (the
chosen number is printed and recorded in lineage.json, so the run can be repeated exactly).

examples:
  gptoss train-tiny                                   # rebuild src/gptoss/models/gpt-oss-tiny
  gptoss train-tiny --out /tmp/tiny --minutes 20      # a quicker model elsewhere
  gptoss train-tiny --out /tmp/tiny --resume          # continue an interrupted run (same options)
  gptoss eval tiny --model /tmp/tiny
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from gptoss.models import BUNDLED_DIR

    p.epilog = EPILOG
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--out", type=Path, default=BUNDLED_DIR,
                   help="where the model goes (default: the bundled model's folder, %(default)s)")
    p.add_argument("--work", type=Path,
                   help="corpus cache and resumable state (default: <gptoss cache>/train-tiny/<seed>)")
    p.add_argument("--resume", action="store_true", help="continue from WORK/trainer_state.pt")
    p.add_argument("--seed", type=int, default=RECIPE["seed"], help="corpus, init and data-order seed "
                   "(default: %(default)s)")
    p.add_argument("--conversations", type=positive_int, default=RECIPE["conversations"],
                   help="training conversations generated (default: %(default)s)")
    p.add_argument("--weights", default=RECIPE["weights"], metavar="FAMILY=W,...",
                   help="corpus family mix (default: %(default)s)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=positive_int, help=f"optimizer steps (default: {RECIPE['steps']})")
    budget.add_argument("--minutes", type=float, help="pick --steps to fit this much training time")
    p.add_argument("--max-minutes", type=float,
                   help="safety cap: stop training after this long and export what there is (recorded in "
                        "lineage.json; such a model is not the reproducible recipe)")
    p.add_argument("--batch-size", type=positive_int, default=RECIPE["batch_size"],
                   help="conversations per step (default: %(default)s)")
    p.add_argument("--lr", type=float, default=RECIPE["lr"], help="peak learning rate (default: %(default)s)")
    p.add_argument("--init", choices=["recipe", "torch"], default=RECIPE["init"],
                   help="torch: embedding N(0,1), matrices at nn.Linear scale (learns to copy much faster); "
                        "recipe: std 0.02 (gptoss.train.init) (default: %(default)s)")
    p.add_argument("--shared-digits", action=argparse.BooleanOptionalAction, default=RECIPE["shared_digits"],
                   help="train number tokens' embedding/unembedding rows as sums of shared per-digit vectors, "
                        "baked into plain rows at export (default: on)")
    p.add_argument("--shared-spelling", action="store_true",
                   help="the same for word pieces of letters: rows as sums of shared (place, letter) vectors "
                        "(experimental; --shared-codes copies names better)")
    p.add_argument("--shared-codes", action=argparse.BooleanOptionalAction, default=RECIPE["shared_codes"],
                   help="capitalised word pieces (names, cities, codes): rows as sums of 3 of 48 shared vectors, "
                        "a distinct triple per token (default: %(default)s)")
    p.add_argument("--lowercase-codes", action=argparse.BooleanOptionalAction, default=RECIPE["lowercase_codes"],
                   help="with --shared-codes, lowercase word pieces too (items, labels, e-mail addresses, argument "
                        "names): a shared code added to each row, in the copy warm-up's pool (default: %(default)s)")
    p.add_argument("--paired-codes", action=argparse.BooleanOptionalAction, default=RECIPE["paired_codes"],
                   help="with --shared-codes, a piece and its space- or dot-prefixed form share one code plus a "
                        "prefix vector, so ' DIS' in a prompt maps onto 'DIS' in JSON arguments (default: %(default)s)")
    p.add_argument(
        "--copy-warmup", type=non_negative_int, default=RECIPE["copy_warmup"], metavar="STEPS",
        help="before the corpus, STEPS steps of a pure copy task over word-piece and number tokens, so the model has a "
             "copying circuit to build tool use on (gptoss.train.copy_warmup) (default: %(default)s)")
    p.add_argument(
        "--curriculum", type=non_negative_int, default=RECIPE["curriculum"], metavar="STEPS",
        help="first train STEPS steps on short conversations (no system message) of --curriculum-weights' "
             "families: a small model learns to copy values fast from a short context and then keeps the skill "
             "(a long fixed prefix from step 0 stalls it) (default: %(default)s)")
    p.add_argument("--curriculum-weights", default=RECIPE["curriculum_weights"],
                   metavar="FAMILY=W,...", help="family mix of the curriculum (default: %(default)s)")
    p.add_argument("--threads", type=positive_int, default=os.cpu_count() or 1,
                   help="torch threads (default: all cores, %(default)s)")
    for name, value in SHAPE.items():
        p.add_argument("--" + name.replace("_", "-"), type=positive_int, default=value,
                       help="model shape (default: %(default)s)")
    p.add_argument("--log-every", type=positive_int, default=25,
                   help="steps between log lines when stderr is not a terminal (default: %(default)s)")


def model_config(args: argparse.Namespace, kept: tuple[int, ...]):
    from gptoss.config import preset

    return preset("tiny", num_hidden_layers=args.layers, hidden_size=args.hidden, num_attention_heads=args.heads,
                  num_key_value_heads=args.kv_heads, head_dim=args.head_dim, num_experts=args.experts,
                  experts_per_token=args.top_k, intermediate_size=args.intermediate, sliding_window=args.window,
                  initial_context_length=args.context, kept_token_ids=kept)


def number_ids() -> set[int]:
    """Token ids of every 1-3 digit string: o200k splits numbers into such groups, so with these rows any number
    in a prompt can be read and copied, even one the corpus never drew."""
    from gptoss.tokenizer import get_tokenizer

    tok = get_tokenizer()
    ids: set[int] = set()
    for width in (1, 2, 3):
        for n in range(10 ** width):
            ids.update(tok.encode(f"{n:0{width}d}"))
    return ids


def tiny_kept_ids(examples: list) -> tuple[int, ...]:
    """The kept vocabulary of a tiny model trained on ``examples``: their ids plus every number token."""
    from gptoss.cli.train import kept_ids

    return tuple(sorted({*kept_ids(examples), *number_ids()}))


def _shard(job: tuple[int, int, str, dict, bool]) -> list:
    from gptoss.train.corpus import generate_tasks
    from gptoss.train.data import encode_conversation

    n, seed, split, weights, system = job
    return [encode_conversation(t.messages, system) for t in generate_tasks(n, seed, split, weights)]


def build_corpus(n: int, seed: int, split: str, weights: dict, workers: int, system: bool = True,
                 first_shard: int = 0) -> list:
    """``n`` encoded conversations in shards of :data:`SHARD`, shard ``k`` seeded ``seed * 100000 + first_shard +
    k``: the result does not depend on ``workers``. ``system=False``: rendered without the system message."""
    jobs = [(min(SHARD, n - start), seed * 100_000 + first_shard + k, split, weights, system)
            for k, start in enumerate(range(0, n, SHARD))]
    if workers <= 1 or len(jobs) == 1:
        parts = [_shard(j) for j in jobs]
    else:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(min(workers, len(jobs))) as pool:
            parts = pool.map(_shard, jobs)
    return [e for part in parts for e in part]


def _corpus(args: argparse.Namespace, work: Path, weights: dict, console: Console) -> tuple[list, list, list]:
    """(training, held-out, curriculum) examples; cached in WORK/corpus.pt under the options that made them."""
    import torch

    from gptoss.train.corpus import parse_weights

    n_early = args.curriculum * args.batch_size  # each curriculum conversation is seen once
    early_weights = parse_weights(args.curriculum_weights) if n_early else {}
    key = {"generator": generator_fingerprint(), "seed": args.seed, "conversations": args.conversations,
           "weights": weights, "eval": EVAL_CONVERSATIONS}
    if n_early:
        key["curriculum"] = {"conversations": n_early, "weights": early_weights}
    cache = work / "corpus.pt"
    if cache.is_file():
        saved = torch.load(cache, weights_only=False)
        if saved.get("key") == key:
            console.print(f"corpus: cached {cache}", highlight=False)
            return saved["train"], saved["eval"], saved.get("curriculum", [])
    t0 = time.perf_counter()
    train = build_corpus(args.conversations, args.seed, "train", weights, args.threads)
    evald = build_corpus(EVAL_CONVERSATIONS, args.seed, "heldout", weights, 1)
    # Curriculum shards are numbered after every training shard, so they are new conversations.
    early = build_corpus(n_early, args.seed, "train", early_weights, args.threads, system=False,
                         first_shard=50_000) if n_early else []
    torch.save({"key": key, "train": train, "eval": evald, "curriculum": early}, cache)
    console.print(f"corpus: {len(train)} training + {len(evald)} held-out conversations"
                  + (f" + {len(early)} short curriculum ones" if early else "")
                  + f" in {time.perf_counter() - t0:.0f} s", highlight=False)
    return train, evald, early


def _calibrate(model, targs, data, minutes: float, console: Console) -> int:
    """Optimizer steps that fit ``minutes``, timed on a throwaway copy of the model."""
    import copy

    from gptoss.train.trainer import Trainer

    probe_args = dataclasses.replace(targs, out_dir=str(Path(targs.out_dir) / "calibrate"), steps=6, eval_every=0,
                                     save_every=0, curriculum_steps=0)
    probe = Trainer(copy.deepcopy(model), probe_args)
    times: list[float] = []
    last = [time.perf_counter()]

    def tick(_log) -> None:
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    probe.train(data, on_step=tick)
    shutil.rmtree(probe_args.out_dir, ignore_errors=True)
    per_step = sorted(times[1:])[len(times[1:]) // 2]  # median, skipping the first (allocation) step
    steps = max(1, int(minutes * 60 / per_step))
    console.print(f"budget {minutes:g} min at {per_step:.2f} s/step -> --steps {steps}", highlight=False)
    return steps


def run(args: argparse.Namespace) -> int:
    import torch

    from gptoss.train.corpus import parse_weights
    from gptoss.train.init import init_model, share_codes, share_digits, share_spelling, torch_scale_init
    from gptoss.train.trainer import Trainer, TrainingArgs
    from gptoss.weights.fingerprint import cache_dir

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # tiny weights early in training would otherwise hit slow denormal paths
    console = Console()
    weights = parse_weights(args.weights)
    if args.minutes is None:
        _check_curriculum(args.curriculum, args.steps or RECIPE["steps"])
    out: Path = args.out
    work: Path = args.work or cache_dir() / "train-tiny" / str(args.seed)
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    data, eval_data, early = _corpus(args, work, weights, console)
    cfg = model_config(args, tiny_kept_ids([*data, *eval_data, *early]))
    torch.manual_seed(args.seed)
    model = init_model(cfg, args.seed)
    if args.init == "torch":
        torch_scale_init(model, args.seed)
    if args.shared_digits:
        console.print(f"shared digit vectors: {share_digits(model, args.seed)} number rows", highlight=False)
    if args.shared_spelling:
        console.print(f"shared spelling vectors: {share_spelling(model, args.seed)} letter rows", highlight=False)
    if args.shared_codes:
        n = share_codes(model, args.seed, lowercase=args.lowercase_codes, paired=args.paired_codes)
        console.print(f"shared code vectors: {n} {'word piece' if args.lowercase_codes else 'capitalised'} rows",
                      highlight=False)
    targs = TrainingArgs(out_dir=str(work), steps=args.steps or RECIPE["steps"], batch_size=args.batch_size,
                         max_seq_len=1024, lr=args.lr, warmup_steps=50, min_lr_ratio=0.05, weight_decay=0.01,
                         eval_every=100, save_every=100, seed=args.seed, length_bucket=16,
                         fake_quant_from=0.75, curriculum_steps=args.curriculum)
    if args.minutes is not None:
        if args.resume:
            raise ValueError("--minutes picks a new step count; resume with the --steps it printed")
        steps = _calibrate(model, targs, data, args.minutes, console)
        _check_curriculum(args.curriculum, steps)
        targs = dataclasses.replace(targs, steps=steps)

    lineage = {"name": "gpt-oss-tiny", "built_by": "gptoss train-tiny", "seed": args.seed,
               "conversations": args.conversations, "eval_conversations": EVAL_CONVERSATIONS,
               "family_weights": weights, "shape": {k: getattr(args, k) for k in SHAPE},
               "kept_token_ids": len(cfg.kept_token_ids), "threads": args.threads,
               "command": "gptoss train-tiny " + _argv(args, targs.steps)}
    trainer = Trainer(model, targs, lineage)
    if args.resume and trainer.try_resume():
        console.print(f"resumed at step {trainer.step}", style="green")
    elif args.copy_warmup:
        _copy_warmup(trainer.model, cfg.kept_token_ids, args, console)
    n_params = sum(p.numel() for p in trainer.model.parameters())
    console.print(f"model: {cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, {cfg.num_experts} experts "
                  f"(top {cfg.experts_per_token}), {len(cfg.kept_token_ids)} kept token ids, {n_params:,} params; "
                  f"{targs.steps} steps of {targs.batch_size}", highlight=False)
    t_train = time.perf_counter()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  TextColumn("{task.fields[info]}"), console=err_console, disable=not err_console.is_terminal) as bar:
        task = bar.add_task("training", total=targs.steps, completed=trainer.step, info="")

        def on_step(log) -> None:
            info = step_info(log)
            if not err_console.is_terminal and (log.step % args.log_every == 0 or log.eval_loss is not None):
                elapsed = time.perf_counter() - t_train
                console.print(f"step {log.step}/{targs.steps} {elapsed / 60:.1f} min: {info}", highlight=False)
            bar.update(task, completed=log.step, info=info)

        deadline = None if args.max_minutes is None else t_train + args.max_minutes * 60

        def stop() -> bool:
            return deadline is not None and time.perf_counter() > deadline

        history = trainer.train(data, eval_data, on_step, stop, curriculum=early)
    if trainer.step < targs.steps:
        console.print(f"--max-minutes reached: stopped at step {trainer.step} of {targs.steps}", style="yellow")
        lineage["stopped_early_at_step"] = trainer.step
    train_s = time.perf_counter() - t_train
    rates = [h.tokens_per_s for h in history]
    lineage.update({"train_seconds": round(train_s), "total_seconds": round(time.perf_counter() - t_start),
                    "median_tokens_per_s": round(sorted(rates)[len(rates) // 2]) if rates else None})
    trainer.lineage = lineage
    wdir = export(trainer, out, work)
    console.print(f"exported {wdir} ({_size(wdir) / 1e6:.1f} MB) in {train_s / 60:.1f} min of training",
                  highlight=False)
    return 0


def _copy_warmup(model, kept_ids, args: argparse.Namespace, console: Console) -> None:
    from gptoss.train.copy_warmup import copy_pool, copy_warmup

    pool = copy_pool(kept_ids, lowercase=args.shared_codes and args.lowercase_codes)
    t0 = time.perf_counter()

    def on_step(step: int, loss: float, acc: float) -> None:
        if step % 50 == 0 or step == args.copy_warmup:
            console.print(f"copy warm-up {step}/{args.copy_warmup}: loss {loss:.3f}, copy accuracy {acc:.1%} "
                          f"({time.perf_counter() - t0:.0f} s)", highlight=False)

    copy_warmup(model, pool, args.copy_warmup, args.seed, on_step=on_step)


def _check_curriculum(curriculum: int, steps: int) -> None:
    if curriculum >= steps:
        raise ValueError(f"--curriculum {curriculum} leaves no steps of the main corpus out of {steps}; give more "
                         f"--steps (or --minutes) or a smaller --curriculum (0 = none)")


def _argv(args: argparse.Namespace, steps: int) -> str:
    parts = [f"--seed {args.seed}", f"--conversations {args.conversations}", f"--weights {args.weights}",
             f"--steps {steps}", f"--batch-size {args.batch_size}", f"--lr {args.lr:g}"]
    parts += [f"--init {args.init}", "--shared-digits" if args.shared_digits else "--no-shared-digits"]
    parts += ["--shared-spelling"] if args.shared_spelling else []
    parts += ["--shared-codes" if args.shared_codes else "--no-shared-codes"]
    parts += ["--lowercase-codes" if args.lowercase_codes else "--no-lowercase-codes"] if args.shared_codes else []
    parts += ["--paired-codes"] if args.shared_codes and args.paired_codes else []
    parts += [f"--copy-warmup {args.copy_warmup}"] if args.copy_warmup else []
    parts += [f"--curriculum {args.curriculum}", f"--curriculum-weights {args.curriculum_weights}"] \
        if args.curriculum else []
    parts += [f"--{k.replace('_', '-')} {getattr(args, k)}" for k in SHAPE]
    return " ".join(parts)


def _size(root: Path) -> int:
    return sum(f.stat().st_size for f in root.iterdir() if f.is_file())


def export(trainer, out: Path, work: Path) -> Path:
    """Write the inference checkpoint flat into ``out`` (config.json, model.safetensors, dtypes.json,
    lineage.json, README.md, SHA256SUMS); files a previous build left there are replaced."""
    from gptoss.models import write_manifest

    staged = trainer.export(work / "export")  # WORK/export/original/
    out.mkdir(parents=True, exist_ok=True)
    for f in out.iterdir():
        if f.is_file():
            f.unlink()
    for f in staged.iterdir():
        shutil.copyfile(f, out / f.name)
    lineage = json.loads((out / "lineage.json").read_text())
    (out / "README.md").write_text(model_card(lineage))
    write_manifest(out)
    return out


def model_card(lineage: dict) -> str:
    shape = lineage.get("shape", {})
    final = lineage.get("final") or {}
    return f"""# gpt-oss-tiny

The playground model bundled with gptoss: the exact gpt-oss architecture (YaRN RoPE, attention sinks,
alternating banded/full attention, top-k MoE with MXFP4-packed experts) at toy size, trained from scratch
on the synthetic harmony corpus of `gptoss.train.corpus` (python tool, developer functions, browser with
citations, JSON to a schema, greetings/identity/refusals, effort-dependent reasoning). It knows nothing
beyond that corpus; it exists so every feature runs out of the box. Use a real gpt-oss checkpoint for
real work.

- shape: {shape.get('layers')} layers, hidden {shape.get('hidden')}, {shape.get('heads')} query / \
{shape.get('kv_heads')} kv heads of {shape.get('head_dim')}, {shape.get('experts')} experts (top \
{shape.get('top_k')}) of width {shape.get('intermediate')}, window {shape.get('window')}
- vocabulary: o200k_harmony, trimmed to {lineage.get('kept_token_ids')} kept ids (+ a fallback row; other ids
  are never sampled)
- training: {lineage.get('steps')} steps, seed {lineage.get('seed')}, {lineage.get('conversations')} \
conversations; final loss {final.get('loss', float('nan')):.3f}, held-out loss \
{final.get('eval_loss') or float('nan'):.3f}; {lineage.get('train_seconds')} s of training on \
{lineage.get('threads')} CPU threads
- rebuild: `{lineage.get('command')}`

`lineage.json` has the full record; `SHA256SUMS` is checked before the model is loaded.
"""
