"""``gptoss generate --model PATH --tokens 1,2,3``: token ids in, token ids out."""

from __future__ import annotations

import argparse
import json
import time

from gptoss.cli.common import add_model_arguments, positive_int, token_list


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("--tokens", type=token_list, required=True, metavar="IDS",
                   help="prompt as comma-separated token ids, e.g. 200006,1428,200008")
    p.add_argument("--max-tokens", type=positive_int, default=32, help="tokens to generate (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy (default: %(default)s)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default: %(default)s)")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens; 0 = off")
    p.add_argument("--seed", type=int, help="seed for reproducible sampling")
    p.add_argument("--stop", type=token_list, default=[], metavar="IDS",
                   help="comma-separated token ids that end generation (the stop token is printed)")
    p.add_argument("--json", action="store_true", help="print one JSON object (tokens, finish reason, timings)")


def run(args: argparse.Namespace) -> int:
    from gptoss.api import Model
    from gptoss.engine.generate import BatchGenerator
    from gptoss.engine.sampling import SamplingParams

    params = SamplingParams(args.max_tokens, args.temperature, args.top_p, args.top_k, args.seed,
                            tuple(args.stop))
    t0 = time.perf_counter()
    model = Model.load(args.model, dtype=args.dtype, device=args.device)
    t1 = time.perf_counter()
    gen = BatchGenerator(model.transformer, [args.tokens], params)
    gen.prefill()
    t2 = time.perf_counter()
    finish = None
    for event in gen:
        finish = event.finish_reason
        if not args.json:
            print(event.token, end=" ", flush=True)
    t3 = time.perf_counter()
    tokens = gen.generated[0]
    if args.json:
        print(json.dumps({"prompt_tokens": len(args.tokens), "tokens": tokens, "finish_reason": finish,
                          "load_s": round(t1 - t0, 3), "prefill_s": round(t2 - t1, 3),
                          "decode_s": round(t3 - t2, 3),
                          "decode_tok_s": round(len(tokens) / max(t3 - t2, 1e-9), 2)}))
    else:
        print()
    return 0
