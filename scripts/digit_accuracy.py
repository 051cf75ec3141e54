"""Teacher-forced accuracy on number tokens, per corpus family: can a gpt-oss-tiny checkpoint copy values?

Reads a training run's ``trainer_state.pt`` (``gptoss train-tiny --work DIR``) or an exported model folder
and scores held-out conversations of each family on the learned targets that are 1-3 digit tokens (tool-call
arguments, numbers copied from tool output). Quick (seconds), so it can check a run while it trains. Session 12:
the bundled model scores python 29%, functions 60%, json 75% (--n 16); a run with ``probe_copy.py --init
torch``'s scales at lr 1e-3 had 17/48/48% at step 200 and 17/44/49% at step 400, so it was stopped.

    .venv/bin/python scripts/digit_accuracy.py /tmp/tiny-work/trainer_state.pt [--n 32]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from gptoss.cli.train_tiny import number_ids
from gptoss.train.corpus import generate_tasks
from gptoss.train.data import encode_conversation


def load(path: Path) -> torch.nn.Module:
    if path.is_dir():
        from gptoss.weights.loader import load_transformer

        return load_transformer(path, dtype="float32")[0]
    from gptoss.train.init import CODE_PARTS, init_model, share_codes, share_digits, share_spelling

    state = torch.load(path, weights_only=False)
    model = init_model(_config_from_work(path.parent), 0)
    if any(".parametrizations." in k for k in state["model"]):  # a --shared-digits run
        share_digits(model, 0)
        second = state["model"].get("embedding.parametrizations.weight.1.parts")
        if second is not None:  # and --shared-codes or --shared-spelling
            if second.shape[0] != CODE_PARTS:
                share_spelling(model, 0)
            else:  # --lowercase-codes adds a third parametrization
                share_codes(model, 0, lowercase="embedding.parametrizations.weight.2.parts" in state["model"])
    model.load_state_dict(state["model"])
    return model


def _config_from_work(work: Path):
    """Rebuild the run's config the way train-tiny does (same corpus -> same kept ids)."""
    from gptoss.cli.main import build_parser
    from gptoss.cli.train_tiny import model_config, tiny_kept_ids

    saved = torch.load(work / "corpus.pt", weights_only=False)
    args = build_parser(["train-tiny"]).parse_args(["train-tiny"])
    return model_config(args, tiny_kept_ids([*saved["train"], *saved["eval"]]))


@torch.no_grad()
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path, help="trainer_state.pt or a model folder")
    p.add_argument("--n", type=int, default=32, help="held-out conversations per family")
    p.add_argument("--names", action="store_true",
                   help="score name/city tokens instead, split into a name's first token and the rest")
    args = p.parse_args()
    torch.set_num_threads(1)
    model = load(args.checkpoint).eval()
    if args.names:
        return names_accuracy(model, args.n)
    digits = torch.tensor(sorted(number_ids()))
    for family in ("python", "functions", "json", "browser", "echo"):
        right = total = 0
        for task in generate_tasks(args.n, 7, "heldout", families=[family]):
            ex = encode_conversation(task.messages)
            tokens = torch.tensor([ex.tokens])
            logits = model(tokens, kept_logits=True)[0, :-1]
            targets, mask = tokens[0, 1:], torch.tensor(ex.mask[1:])
            want = mask & torch.isin(targets, digits)
            pred = model.vocab.kept[logits.argmax(-1)] if model.vocab is not None else logits.argmax(-1)
            right += int((pred[want] == targets[want]).sum())
            total += int(want.sum())
        print(f"{family:10s} digit tokens {total:5d}  accuracy {right / max(total, 1):.3f}", flush=True)


def names_accuracy(model: torch.nn.Module, n: int) -> None:
    """Teacher-forced accuracy on learned targets that are name/city tokens: a name's first token (the previous
    token is not a name token) apart from its continuation tokens (copyable by induction once the first is)."""
    from probe_copy import name_ids

    names = torch.tensor(sorted(name_ids()))
    for family in ("functions", "json", "browser", "echo"):
        counts = {"first": [0, 0], "rest": [0, 0]}
        for task in generate_tasks(n, 7, "heldout", families=[family]):
            ex = encode_conversation(task.messages)
            tokens = torch.tensor([ex.tokens])
            logits = model(tokens, kept_logits=True)[0, :-1]
            targets, mask = tokens[0, 1:], torch.tensor(ex.mask[1:])
            is_name = torch.isin(targets, names)
            prev_name = torch.isin(tokens[0, :-1], names)
            pred = model.vocab.kept[logits.argmax(-1)] if model.vocab is not None else logits.argmax(-1)
            for key, want in (("first", mask & is_name & ~prev_name), ("rest", mask & is_name & prev_name)):
                counts[key][0] += int((pred[want] == targets[want]).sum())
                counts[key][1] += int(want.sum())
        print(f"{family:10s} " + "  ".join(f"{k} {r / max(t, 1):.3f} ({t})" for k, (r, t) in counts.items()),
              flush=True)


if __name__ == "__main__":
    main()
