"""``gptoss bench``: prefill and decode speed, peak memory, bytes per token, and how close decoding
gets to the machine's memory-bandwidth limit.

``gptoss bench --model PATH`` measures a checkpoint; ``gptoss bench --preset 20b`` measures a
random checkpoint of that architecture, written once into gptoss's cache (``bench/`` under
``$GPTOSS_CACHE_DIR``, else ``~/.cache/gptoss``; the 20b one is 13.8 GB and takes about ten
minutes to write) and reused afterwards. With ``--preset`` the defaults become the full suite:
prefill of 128 and 512 tokens and decoding at context 0 and 4096.

What is timed, in order:

1. **load**: :meth:`Model.load` (plus the int8 conversion with ``--quantize int8``) and reading one
   byte of every page of every weight except the embedding table, so later timings are steady
   state. The embedding is a lookup (one row per token), so only the rows a prompt uses are
   ever resident; pre-faulting all 201k rows would only inflate the RSS.
2. **warm-up** (untimed; ``--no-warmup`` skips it): an 8-token prefill and one decode step.
3. **prefill** for each ``--prompt-tokens`` N: one forward pass over N random ids (drawn with
   ``--seed`` below the first harmony special id) on an empty cache, in chunks of 512 as the
   engine does, ending with the logits of the last position. ``prefill tok/s = N / seconds``.
4. **decode** for each ``--contexts`` C: ``gen_tokens - 1`` greedy steps, each one forward of one
   token and an argmax, starting at position C. For C > 0 the KV caches are first filled with C
   synthetic entries (random keys and values at positions 0..C-1): decoding cost depends on how
   many keys are read, not on their values, and a real C-token prefill would take minutes.
   ``decode tok/s = steps / seconds``.

Then the peak RSS is read (``getrusage``: a high-water mark over the whole run), and only then
the memory bandwidth is measured (:func:`gptoss.engine.stats.measure_memory_bandwidth`: the best
``sum`` of a 256 MiB buffer with torch's threads, bytes read counted -- decoding reads its weights;
the best ``copy``, read + write bytes counted, is reported beside it), so its buffers never show
in the peak.

**Bytes per token** are counted from the loaded tensors: every attention, norm, router and
unembedding tensor, ``top_k / num_experts`` of every expert tensor (the router selects top_k of
them per token), one embedding row, plus the KV-cache entries a step at context C reads.
**Bound** = bandwidth / bytes per token (tokens/s if decoding did nothing but stream its bytes at
the measured bandwidth); the table gives each decode rate as a percentage of its bound.

``--quantize int8`` runs with the non-expert weights in int8 (:mod:`gptoss.weights.quantize`).
With ``--agreement N`` (default 32 with ``--preset``) it first generates N tokens greedily with
the bf16 weights, then scores the int8 model on the same sequence (teacher forcing): greedy
agreement = share of the N positions where both pick the same token, and the logit error.

``--compare-transformers`` also loads the checkpoint (Hugging Face layout; with ``--preset`` it is
written in that layout) into Hugging Face transformers (bf16, experts dequantized, eager
attention) and times its prefill and decode the same way in the same run: the JSON and the
table give both and the speed-up. Only for models that fit in memory dequantized (e.g.
``--preset 20b --layers 2``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from gptoss.cli.common import add_model_arguments, byte_progress, err_console, positive_int

PROMPT_ID_LIMIT = 199998  # first harmony special token id; prompts stay below it
WARMUP_PROMPT_TOKENS = 8
PAGE = 4096
PREFILL_CHUNK = 512
SUITE_PROMPTS = (128, 512)
SUITE_CONTEXTS = (0, 4096)
SUITE_AGREEMENT = 32


def _gen_tokens(text: str) -> int:
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(
            "expected at least 2: the first token comes from the prefill, decode speed needs a second")
    return value


def _int_list(minimum: int) -> Any:
    def parse(text: str) -> list[int]:
        try:
            values = [int(t) for t in text.split(",") if t.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated integers like 128,512; got {text!r}") from None
        if not values or any(v < minimum for v in values):
            raise argparse.ArgumentTypeError(f"expected integers >= {minimum}; got {text!r}")
        return values
    return parse


def add_arguments(p: argparse.ArgumentParser) -> None:
    from gptoss.config import PRESETS
    from gptoss.weights.quantize import MODES

    add_model_arguments(p)
    for action in p._actions:  # --model or --preset: the shared --model argument becomes optional here
        if "--model" in action.option_strings:
            action.required = False
            action.default = None  # not resolved to the bundled model when --preset is given
            action.help = "checkpoint directory (default: the bundled gpt-oss-tiny; or use --preset)"
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="benchmark a random checkpoint of this shape, written once into the cache "
                        "(20b: 13.8 GB, ~10 min); runs the full suite unless sizes are given")
    p.add_argument("--layers", type=positive_int, help="with --preset: override the number of layers")
    p.add_argument("--quantize", default="none", choices=MODES,
                   help="non-expert weights: none (as stored) or int8 rows with float32 scales (default: %(default)s)")
    p.add_argument("--prompt-tokens", type=_int_list(1), metavar="N[,N...]",
                   help="prompt lengths to prefill (default: 128; with --preset 128,512)")
    p.add_argument("--contexts", type=_int_list(0), metavar="C[,C...]",
                   help="context lengths to decode at (default: 0; with --preset 0,4096)")
    p.add_argument("--gen-tokens", type=_gen_tokens, default=32, metavar="N",
                   help="tokens per decode run; N-1 forward steps are timed (default: %(default)s)")
    p.add_argument("--agreement", type=int, metavar="N",
                   help="with --quantize int8: greedy tokens compared against bf16 (default: 32 with --preset, "
                        "else 0)")
    p.add_argument("--compare-transformers", action="store_true",
                   help="also time Hugging Face transformers on the same checkpoint (small models only)")
    p.add_argument("--seed", type=int, default=0, help="seed for the random prompt (default: %(default)s)")
    p.add_argument("--threads", type=positive_int, metavar="N",
                   help="threads for torch and the kernels (default: torch's choice)")
    p.add_argument("--json", metavar="OUT", help="also write the results as a JSON object to OUT")
    p.add_argument("--no-warmup", dest="warmup", action="store_false",
                   help="skip the untimed warm-up")


def preset_checkpoint(name: str, layers: int | None = None, layout: str = "original", seed: int = 0) -> Path:
    """The cached random checkpoint for a preset (written on first use, atomically)."""
    import dataclasses
    import os

    from gptoss.config import preset
    from gptoss.weights.fingerprint import cache_dir
    from gptoss.weights.random_ckpt import DEFAULT_SHARD_BYTES, checkpoint_nbytes, write_random_checkpoint

    cfg = preset(name)
    if layers:
        cfg = dataclasses.replace(cfg, num_hidden_layers=layers)
    tag = f"{name}{f'-L{layers}' if layers else ''}{'-hf' if layout == 'hf' else ''}-seed{seed}"
    root = cache_dir() / "bench"
    path = root / tag
    if path.is_dir() and any(path.iterdir()):
        return path
    root.mkdir(parents=True, exist_ok=True)
    total = checkpoint_nbytes(cfg)
    free = shutil.disk_usage(root).free
    if free < total * 1.05:
        raise ValueError(f"writing the {tag} benchmark checkpoint needs {total / 1e9:.1f} GB in {root}; "
                         f"only {free / 1e9:.1f} GB are free (set GPTOSS_CACHE_DIR elsewhere)")
    err_console.print(f"writing the random {tag} checkpoint ({total / 1e9:.2f} GB) to {path}; done once",
                      highlight=False)
    tmp = root / f"{tag}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with byte_progress(f"writing {tag}", total) as advance:
            write_random_checkpoint(tmp, cfg, layout, seed, DEFAULT_SHARD_BYTES, advance)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _touch_weights(module: Any) -> None:
    """Read one byte per page of every parameter/buffer storage except the embedding table."""
    import torch

    skip = {module.embedding.weight.untyped_storage().data_ptr()}
    seen: set[int] = set()
    for t in [*module.parameters(), *module.buffers()]:
        if t.device.type != "cpu":
            continue
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr in seen or ptr in skip or storage.nbytes() == 0:
            continue
        seen.add(ptr)
        raw = torch.empty(0, dtype=torch.uint8).set_(storage, 0, (storage.nbytes(),))
        raw[::PAGE].sum()


def weight_bytes_per_token(model: Any) -> int:
    """Weight bytes one decode step reads (see the module docstring), from the loaded tensors."""
    cfg = model.config
    share = cfg.experts_per_token / cfg.num_experts
    total = 0.0
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if name == "embedding.weight":
            total += t.shape[-1] * t.element_size()
        elif ".mlp.mlp1" in name or ".mlp.mlp2" in name:
            total += t.nbytes * share
        elif name.startswith("vocab.") or name == "rope.inv_freq":
            continue
        else:
            total += t.nbytes
    return int(total)


def kv_bytes_per_token(model: Any, context: int, itemsize: int) -> int:
    """KV-cache bytes one decode step at ``context`` reads (keys and values of every layer)."""
    cfg = model.config
    per_slot = 2 * cfg.num_key_value_heads * cfg.head_dim * itemsize
    slots = sum(min(context + 1, cfg.sliding_window) if cfg.is_sliding(i) else context + 1
                for i in range(cfg.num_hidden_layers))
    return slots * per_slot


def _fill_cache(model: Any, cache: list, context: int, gen: Any) -> None:
    """``context`` synthetic entries (random keys/values, positions 0..context-1) in every layer."""
    import torch

    cfg = model.config
    dtype = model.embedding.weight.dtype
    for c0 in range(0, context, PREFILL_CHUNK):
        c1 = min(context, c0 + PREFILL_CHUNK)
        pos = torch.arange(c0, c1)[None]
        for layer in cache:
            k = torch.randn(1, c1 - c0, cfg.num_key_value_heads, cfg.head_dim, generator=gen).to(dtype)
            layer.update_and_fetch(k, torch.randn_like(k, dtype=torch.float32).to(dtype), pos)


def _prefill(model: Any, prompt: list[int], cache: list) -> Any:
    import torch

    logits = None
    for c0 in range(0, len(prompt), PREFILL_CHUNK):
        part = torch.tensor(prompt[c0:c0 + PREFILL_CHUNK])[None]
        pos = torch.arange(c0, c0 + part.shape[1])[None]
        logits = model(part, pos, cache, torch.tensor([part.shape[1] - 1]))
    return logits


def _decode(model: Any, cache: list, token: int, start: int, steps: int) -> tuple[float, list[int], list[Any]]:
    """``steps`` greedy forwards from ``token`` at position ``start``; seconds, tokens, logits."""
    import torch

    seconds, tokens, logits = 0.0, [], []
    zero = torch.zeros(1, dtype=torch.long)
    for i in range(steps):
        t0 = time.perf_counter()
        out = model(torch.tensor([[token]]), torch.tensor([[start + i]]), cache, zero)  # (1, V)
        token = int(out[0].argmax())
        seconds += time.perf_counter() - t0
        tokens.append(token)
        logits.append(out[0])
    return seconds, tokens, logits


def _agreement_reference(model: Any, prompt: list[int], n: int) -> tuple[list[int], Any]:
    """bf16 greedy continuation of ``prompt`` (n tokens) and the logits each was chosen from."""
    import torch

    from gptoss.model.cache import make_cache

    cache = make_cache(model.config, 1, model.embedding.weight.dtype)
    first = _prefill(model, prompt, cache)[0]
    tok = int(first.argmax())
    _, toks, logits = _decode(model, cache, tok, len(prompt), n - 1)
    return [tok, *toks], torch.stack([first, *logits])


def _agreement_score(model: Any, prompt: list[int], tokens: list[int], ref_logits: Any) -> dict[str, float]:
    """Teacher-forced comparison of ``model`` against the reference continuation."""
    import torch

    from gptoss.model.cache import make_cache

    seq = prompt + tokens[:-1]
    cache = make_cache(model.config, 1, model.embedding.weight.dtype)
    rows = []
    for c0 in range(0, len(seq), PREFILL_CHUNK):
        part = torch.tensor(seq[c0:c0 + PREFILL_CHUNK])[None]
        out = model(part, torch.arange(c0, c0 + part.shape[1])[None], cache)[0]
        rows.append(out)
    got = torch.cat(rows)[len(prompt) - 1:]  # (n, V): the logits each reference token was chosen from
    ref = ref_logits.float()
    agree = (got.argmax(-1) == torch.tensor(tokens)).float().mean()
    keep = torch.isfinite(ref)  # a trimmed vocabulary gives -inf to the ids it never samples
    diff = torch.where(keep, got - ref, 0.0)
    ref0 = torch.where(keep, ref, 0.0)
    err = diff.abs().amax(-1) / ref0.abs().amax(-1)
    rms = diff.pow(2).sum(-1).sqrt() / ref0.pow(2).sum(-1).sqrt()
    return {"tokens": len(tokens), "greedy_agreement": float(agree), "max_logit_error": float(err.max()),
            "mean_logit_error": float(err.mean()), "mean_rms_error": float(rms.mean())}


def _bench_transformers(path: Path, prompts: list[list[int]], gen_tokens: int) -> dict[str, Any]:
    """Hugging Face transformers on the same checkpoint: prefill per prompt, decode at context 0."""
    import warnings

    import torch

    try:
        from transformers import GptOssForCausalLM, Mxfp4Config
    except ImportError as e:
        raise ValueError(f"--compare-transformers needs the transformers package: {e}") from None
    hf_dir = path
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model = GptOssForCausalLM.from_pretrained(hf_dir, dtype=torch.bfloat16,
                                                      quantization_config=Mxfp4Config(dequantize=True),
                                                      attn_implementation="eager").eval()
        except (OSError, ValueError) as e:
            raise ValueError(f"transformers cannot load {hf_dir} (needs the Hugging Face layout): {e}") from None
    out: dict[str, Any] = {"version": __import__("transformers").__version__, "prefill": [], "decode": {}}
    with torch.inference_mode():
        model(torch.tensor([prompts[0][:2]]), logits_to_keep=1)  # warm-up (transformers is slow here)
        for prompt in prompts:
            t0 = time.perf_counter()
            model(torch.tensor([prompt]), logits_to_keep=1)  # last position's logits only, as gptoss
            dt = time.perf_counter() - t0
            out["prefill"].append({"tokens": len(prompt), "seconds": dt, "tok_s": len(prompt) / dt})
        steps, seconds = gen_tokens - 1, 0.0
        res = model(torch.tensor([[prompts[0][0]]]), use_cache=True)
        past, tok = res.past_key_values, int(res.logits[0, -1].argmax())
        for _ in range(steps):
            t0 = time.perf_counter()
            res = model(torch.tensor([[tok]]), past_key_values=past, use_cache=True)
            past, tok = res.past_key_values, int(res.logits[0, -1].argmax())
            seconds += time.perf_counter() - t0
        out["decode"] = {"context": 0, "steps": steps, "seconds": seconds, "tok_s": steps / seconds}
    del model
    return out


def _fmt_bytes(n: float) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} B"


def _fmt_rate(x: float) -> str:
    return f"{x:,.1f}" if x >= 10 else f"{x:.3g}"


def run(args: argparse.Namespace) -> int:
    import torch

    from gptoss import ops
    from gptoss.api import Model
    from gptoss.engine import stats
    from gptoss.model.cache import make_cache
    from gptoss.weights.quantize import quantize_transformer

    if args.preset and args.model:
        raise ValueError("give --model or --preset, not both")
    if args.layers and not args.preset:
        raise ValueError("--layers only applies with --preset")
    if args.agreement is not None and args.agreement < 0:
        raise ValueError("--agreement must be >= 0")
    suite = bool(args.preset)
    prompts_n = args.prompt_tokens or list(SUITE_PROMPTS if suite else (128,))
    contexts = args.contexts if args.contexts is not None else list(SUITE_CONTEXTS if suite else (0,))
    agreement = args.agreement if args.agreement is not None else (SUITE_AGREEMENT if suite else 0)
    if args.quantize == "none":
        agreement = 0
    if args.preset:
        path = preset_checkpoint(args.preset, args.layers, "hf" if args.compare_transformers else "original",
                                 args.seed)
    else:
        from gptoss.models import default_model_path

        path = Path(args.model) if args.model else default_model_path()
    if args.threads:
        torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    model = Model.load(path, dtype=args.dtype, device=args.device)
    tr = model.transformer
    cfg = model.config
    dtype_name = str(model.dtype).removeprefix("torch.")
    gen = torch.Generator().manual_seed(args.seed)
    limit = min(cfg.vocab_size, PROMPT_ID_LIMIT)
    prompts = [torch.randint(0, limit, (n,), generator=gen).tolist() for n in prompts_n]
    accuracy: dict[str, Any] | None = None
    ref = None
    with torch.inference_mode():
        if agreement:  # the bf16 reference continuation, before the weights are converted
            ref_prompt = prompts[0][:128]
            ref = (ref_prompt, *_agreement_reference(tr, ref_prompt, agreement))
        quantize_transformer(tr, args.quantize)
        _touch_weights(tr)
        load_seconds = time.perf_counter() - t0

        if args.warmup:
            cache = make_cache(cfg, 1, model.dtype, model.device)
            logits = _prefill(tr, prompts[0][:WARMUP_PROMPT_TOKENS], cache)
            _decode(tr, cache, int(logits[0].argmax()), min(WARMUP_PROMPT_TOKENS, len(prompts[0])), 1)
            del cache

        prefill = []
        for prompt in prompts:
            cache = make_cache(cfg, 1, model.dtype, model.device)
            t0 = time.perf_counter()
            _prefill(tr, prompt, cache)
            dt = time.perf_counter() - t0
            prefill.append({"tokens": len(prompt), "seconds": dt, "tok_s": len(prompt) / dt})
            del cache

        weights = weight_bytes_per_token(tr)
        decode = []
        show = sys.stderr.isatty()
        for context in contexts:
            cache = make_cache(cfg, 1, model.dtype, model.device)
            if context:
                _fill_cache(tr, cache, context, gen)
            if show:
                err_console.print(f"decoding at context {context} ...", highlight=False)
            steps = args.gen_tokens - 1
            dt, _, _ = _decode(tr, cache, prompts[0][0], context, steps)
            kv = kv_bytes_per_token(tr, context, model.dtype.itemsize)
            decode.append({"context": context, "steps": steps, "seconds": dt, "tok_s": steps / dt,
                           "weight_bytes_per_token": weights, "kv_bytes_per_token": kv,
                           "bytes_per_token": weights + kv})
            del cache
        if ref is not None:
            accuracy = _agreement_score(tr, *ref)

    rss = stats.current_rss_bytes()
    peak = max(stats.peak_rss_bytes(), rss)  # read before the bandwidth buffer exists: it never falls
    # Decoding reads its weights: the bound uses read bandwidth (copy bandwidth is reported beside it).
    bandwidth = stats.measure_memory_bandwidth(seconds=2.0, device=model.device, mode="read")
    copy_bandwidth = stats.measure_memory_bandwidth(seconds=2.0, device=model.device, mode="copy")
    for d in decode:
        d["bound_tok_s"] = bandwidth / d["bytes_per_token"]
        d["fraction_of_bound"] = d["tok_s"] / d["bound_tok_s"]

    hf = None
    if args.compare_transformers:
        del model, tr
        hf = _bench_transformers(path, prompts, args.gen_tokens)
        for ours, theirs in zip(prefill, hf["prefill"], strict=True):
            theirs["speedup"] = ours["tok_s"] / theirs["tok_s"]
        hf["decode"]["speedup"] = decode[0]["tok_s"] / hf["decode"]["tok_s"] if decode else None

    backend = ops.backend_name()
    if backend == "cpu":
        from gptoss.ops import cpu

        backend = f"cpu ({cpu.kernel_info()['impl']} kernel)"
    first_p, first_d = prefill[0], (decode[0] if decode else None)
    result: dict[str, Any] = {
        "model": str(args.model) if args.model else str(path), "preset": args.preset, "layers": cfg.num_hidden_layers,
        "dtype": dtype_name, "device": str(args.device),
        "quantize": args.quantize, "ops": backend, "threads": torch.get_num_threads(),
        "prompt_tokens": first_p["tokens"], "gen_tokens": args.gen_tokens,
        "decode_tokens": args.gen_tokens - 1, "load_seconds": load_seconds,
        "prefill_seconds": first_p["seconds"], "prefill_tok_s": first_p["tok_s"],
        "decode_seconds": first_d["seconds"] if first_d else 0.0, "decode_tok_s": first_d["tok_s"] if first_d else 0.0,
        "peak_rss_bytes": peak, "rss_bytes": rss, "weight_bytes_read_per_token": weights,
        "bandwidth_bytes_s": bandwidth, "copy_bandwidth_bytes_s": copy_bandwidth,
        "bandwidth_share": stats.bandwidth_share(first_d["bytes_per_token"], first_d["tok_s"], bandwidth)
        if first_d else 0.0,
        "prefill": prefill, "decode": decode, "accuracy": accuracy, "transformers": hf,
    }
    _print_table(result, str(path))
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def _print_table(r: dict[str, Any], path: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"gptoss bench: {path}", title_justify="left")
    for col, justify in (("metric", "left"), ("value", "right"), ("bytes / token", "right"),
                         ("% of bound", "right"), ("", "left")):
        table.add_column(col, justify=justify, style="dim" if col == "" else None)  # type: ignore[arg-type]
    table.add_row("dtype / quantize / threads", f"{r['dtype']} / {r['quantize']} / {r['threads']}", "", "", "")
    table.add_row("ops backend", r["ops"], "", "", "--ops")
    table.add_row("load", f"{r['load_seconds']:.1f} s", "", "", "incl. paging weights in")
    for p in r["prefill"]:
        table.add_row(f"prefill {p['tokens']}", f"{_fmt_rate(p['tok_s'])} tok/s", "", "", f"{p['seconds']:.2f} s")
    for d in r["decode"]:
        table.add_row(f"decode @ context {d['context']}", f"{_fmt_rate(d['tok_s'])} tok/s",
                      _fmt_bytes(d["bytes_per_token"]), f"{d['fraction_of_bound']:.1%}",
                      f"bound {d['bound_tok_s']:.2f} tok/s; {d['steps']} steps")
    table.add_row("peak RSS", _fmt_bytes(r["peak_rss_bytes"]), "", "", f"{r['peak_rss_bytes'] / 1e9:.2f} GB")
    table.add_row("memory bandwidth", f"{r['bandwidth_bytes_s'] / 1e9:.1f} GB/s", "", "",
                  f"best read (the bound); copy {r.get('copy_bandwidth_bytes_s', 0) / 1e9:.1f} GB/s read+write")
    table.add_row("bandwidth share", f"{r['bandwidth_share']:.1%}", "", "", "first decode row")
    acc = r.get("accuracy")
    if acc:
        table.add_row("greedy agreement vs bf16", f"{acc['greedy_agreement']:.1%}", "", "",
                      f"{acc['tokens']} tokens; max logit error {acc['max_logit_error']:.2%}")
    hf = r.get("transformers")
    if hf:
        for p in hf["prefill"]:
            table.add_row(f"transformers prefill {p['tokens']}", f"{_fmt_rate(p['tok_s'])} tok/s", "", "",
                          f"gptoss {p['speedup']:.1f}x faster")
        d = hf["decode"]
        table.add_row("transformers decode", f"{_fmt_rate(d['tok_s'])} tok/s", "", "",
                      f"gptoss {d['speedup']:.1f}x faster")
    Console(width=max(Console().width, 120)).print(table)
