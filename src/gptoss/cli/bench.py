"""``gptoss bench --model PATH``: prefill/decode speed, peak memory, and how much of the machine's
memory bandwidth decoding uses.

What is timed, in order:

1. **load**: :meth:`Model.load` plus reading one byte of every page of every weight. On CPU the
   loader memory-maps the checkpoint, so without this the first forward passes would be timed
   paging weights in from disk; with it, load time is the real cost of getting the weights
   resident and the later timings are steady-state.
2. **warm-up** (untimed, ``--no-warmup`` skips it): a short separate generation (8 prompt tokens,
   one decode forward) so one-time kernel/allocator setup is not charged to prefill.
3. **prefill**: :meth:`BatchGenerator.prefill` over ``--prompt-tokens`` random ids drawn with
   ``--seed`` from ``[0, min(vocab, 199998))`` (ordinary text tokens, no harmony specials). It
   ends with the logits of the first generated token.
4. **decode**: greedy generation of ``--gen-tokens`` tokens (``max_tokens = gen_tokens``, no stop
   tokens). The first token is sampled from the prefill logits; each of the other
   ``gen_tokens - 1`` tokens costs one decode forward. Timed are the ``gen_tokens - 1`` calls of
   :meth:`BatchGenerator.step` that each sample a token and run it through the model (only those
   calls: progress-bar updates are outside the clock); the last step, which only samples, is not.
   ``decode tok/s = (gen_tokens - 1) / decode seconds``.

The ops backend is the one ``--ops`` chose (default ``auto``: the packed-MXFP4 C kernels of
:mod:`gptoss.ops.cpu` on a CPU when they build); the table and the JSON (``"ops"``) name it.

Then the peak RSS is read, and only after that the host memory bandwidth is measured (a 256 MiB
copy; see :mod:`gptoss.engine.stats`), so its buffer never inflates the reported peak.
``bandwidth share = weight bytes read per token * decode tok/s / bandwidth``: near 1 means decode
is memory-bound at the measured ceiling; KV-cache reads are not counted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from gptoss.cli.common import add_model_arguments, err_console, positive_int

PROMPT_ID_LIMIT = 199998  # first harmony special token id; prompts stay below it
WARMUP_PROMPT_TOKENS = 8
PAGE = 4096


def _gen_tokens(text: str) -> int:
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(
            "expected at least 2: the first token comes from the prefill, decode speed needs a second")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("--prompt-tokens", type=positive_int, default=128, metavar="N",
                   help="random prompt length to prefill (default: %(default)s)")
    p.add_argument("--gen-tokens", type=_gen_tokens, default=32, metavar="N",
                   help="tokens to generate greedily; N-1 decode steps are timed (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed for the random prompt (default: %(default)s)")
    p.add_argument("--threads", type=positive_int, metavar="N",
                   help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--json", metavar="OUT", help="also write the results as a JSON object to OUT")
    p.add_argument("--no-warmup", dest="warmup", action="store_false",
                   help="skip the untimed warm-up generation")


def _touch_weights(module: object) -> None:
    """Read one byte per page of every parameter/buffer storage (faults mmapped weights in)."""
    import torch

    seen: set[int] = set()
    tensors = [*module.parameters(), *module.buffers()]  # type: ignore[attr-defined]
    for t in tensors:
        if t.device.type != "cpu":
            continue
        storage = t.untyped_storage()
        if storage.data_ptr() in seen or storage.nbytes() == 0:
            continue
        seen.add(storage.data_ptr())
        raw = torch.empty(0, dtype=torch.uint8).set_(storage, 0, (storage.nbytes(),))
        raw[::PAGE].sum()


def _sync(device: object) -> None:
    import torch

    if getattr(device, "type", None) == "cuda":
        torch.cuda.synchronize(device)  # type: ignore[arg-type]


def _fmt_bytes(n: float) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} B"


def _fmt_rate(x: float) -> str:
    return f"{x:,.1f}" if x >= 10 else f"{x:.3g}"


def run(args: argparse.Namespace) -> int:
    import torch
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from gptoss import ops
    from gptoss.api import Model
    from gptoss.engine import stats
    from gptoss.engine.generate import BatchGenerator
    from gptoss.engine.sampling import SamplingParams

    if args.threads:
        torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    model = Model.load(args.model, dtype=args.dtype, device=args.device)
    _touch_weights(model.transformer)
    _sync(model.device)
    load_seconds = time.perf_counter() - t0

    cfg = model.config
    gen = torch.Generator().manual_seed(args.seed)
    prompt = torch.randint(0, min(cfg.vocab_size, PROMPT_ID_LIMIT), (args.prompt_tokens,), generator=gen).tolist()
    params = SamplingParams(max_tokens=args.gen_tokens, temperature=0.0)

    if args.warmup:
        warm = BatchGenerator(model.transformer, [prompt[:WARMUP_PROMPT_TOKENS]],
                              SamplingParams(max_tokens=2, temperature=0.0))
        for _ in warm:
            pass
        del warm

    bg = BatchGenerator(model.transformer, [prompt], params)
    _sync(model.device)
    t0 = time.perf_counter()
    bg.prefill()
    _sync(model.device)
    prefill_seconds = time.perf_counter() - t0

    decode_tokens = args.gen_tokens - 1
    decode_seconds = 0.0
    show = sys.stderr.isatty()
    with Progress(TextColumn("decoding"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True, disable=not show) as progress:
        task = progress.add_task("decode", total=args.gen_tokens)
        for i in range(args.gen_tokens):
            t0 = time.perf_counter()
            bg.step()
            if i < decode_tokens:  # the last step only samples (no forward): not timed
                _sync(model.device)
                decode_seconds += time.perf_counter() - t0
            progress.advance(task)
    assert len(bg.generated[0]) == args.gen_tokens and bg.done

    rss = stats.current_rss_bytes()
    peak = max(stats.peak_rss_bytes(), rss)  # read before the bandwidth buffer exists: it never falls
    del bg
    bandwidth = stats.measure_memory_bandwidth(device=model.device)

    decode_tok_s = decode_tokens / decode_seconds if decode_seconds > 0 else 0.0
    read = stats.weight_bytes_read_per_token(cfg, model.dtype.itemsize)
    result = stats.BenchResult(
        model=str(args.model), dtype=str(model.dtype).removeprefix("torch."), device=str(model.device),
        threads=torch.get_num_threads(), prompt_tokens=args.prompt_tokens, gen_tokens=args.gen_tokens,
        decode_tokens=decode_tokens, load_seconds=load_seconds, prefill_seconds=prefill_seconds,
        prefill_tok_s=args.prompt_tokens / prefill_seconds if prefill_seconds > 0 else 0.0,
        decode_seconds=decode_seconds, decode_tok_s=decode_tok_s, peak_rss_bytes=peak, rss_bytes=rss,
        weight_bytes_read_per_token=read, bandwidth_bytes_s=bandwidth,
        bandwidth_share=stats.bandwidth_share(read, decode_tok_s, bandwidth))

    backend = ops.backend_name()
    if backend == "cpu":
        from gptoss.ops import cpu

        backend = f"cpu ({cpu.kernel_info()['impl']} kernel)"
    table = Table(title=f"gptoss bench: {args.model}", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("", style="dim")
    r = result
    rows = [
        ("dtype / device / threads", f"{r.dtype} / {r.device} / {r.threads}", ""),
        ("ops backend", backend, "--ops"),
        ("load", f"{r.load_seconds:.3f} s", "incl. paging weights in"),
        ("prefill", f"{_fmt_rate(r.prefill_tok_s)} tok/s", f"{r.prompt_tokens} tokens, {r.prefill_seconds:.3f} s"),
        ("decode", f"{_fmt_rate(r.decode_tok_s)} tok/s", f"{r.decode_tokens} steps, {r.decode_seconds:.3f} s"),
        ("peak RSS", _fmt_bytes(r.peak_rss_bytes), f"now {_fmt_bytes(r.rss_bytes)}"),
        ("weights read / token", _fmt_bytes(r.weight_bytes_read_per_token), "KV cache excluded"),
        ("memory bandwidth", f"{r.bandwidth_bytes_s / 1e9:.1f} GB/s", "best copy, read+write"),
        ("bandwidth share", f"{r.bandwidth_share:.1%}", "weights x tok/s / bandwidth"),
    ]
    for row in rows:
        table.add_row(*row)
    Console().print(table)

    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({**result.to_dict(), "ops": backend}, indent=2) + "\n")
    return 0
