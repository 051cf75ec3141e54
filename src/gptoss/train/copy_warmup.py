"""Copy warm-up: a few hundred steps of a pure copying task before the corpus, so a small model has an induction
circuit (find the earlier occurrence of the current token, copy what followed it) to build its tool use on.

Each example is 3-8 tokens drawn from ``pool``, 0-30 filler tokens, a separator and the same tokens again; the
loss is on the repeat only (``scripts/probe_copy.py``'s task). At gpt-oss-tiny's shape with shared rows for the
pool (``train.init.share_codes`` / ``share_digits``) it learns this in ~200 steps on the capitalised pieces
(names, cities: 89 %), while 400 steps of the corpus's own echo family taught it nothing about names (README,
gpt-oss-tiny). With the lowercase pieces too (``share_codes(lowercase=True)``: items, labels, e-mail parts;
3,065 tokens with the numbers) it needs ~400 (56 % at 200, 100 % at 400, 95-96 % on fresh sequences at 500).
A separate AdamW at a constant rate; its state is dropped afterwards.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import torch
from torch import nn

FILLER = (0, 1, 2)  # "!", '"', "#": in every trimmed vocabulary
SEPARATOR = 3  # "$"


def copy_example(rng: random.Random, pool: Sequence[int]) -> tuple[list[int], list[bool]]:
    """(tokens, loss mask) of one example."""
    xs = [rng.choice(pool) for _ in range(rng.randint(3, 8))]
    filler = [rng.choice(FILLER) for _ in range(rng.randint(0, 30))]
    tokens = xs + filler + [SEPARATOR] + xs
    return tokens, [False] * (len(tokens) - len(xs)) + [True] * len(xs)


def copy_warmup(model: nn.Module, pool: Sequence[int], steps: int, seed: int, batch_size: int = 16,
                lr: float = 1e-3, on_step: Callable[[int, float, float], None] | None = None) -> float:
    """Train ``model`` (a trimmed-vocabulary gptoss Transformer) ``steps`` steps on the copy task; returns the
    last step's copy accuracy. ``on_step(step, loss, accuracy)`` after each step."""
    if not pool:
        raise ValueError("copy warm-up needs a non-empty token pool")
    rng = random.Random(seed + 30)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    model.train()
    acc = 0.0
    for step in range(1, steps + 1):
        batch = [copy_example(rng, pool) for _ in range(batch_size)]
        t = max(len(tokens) for tokens, _ in batch)
        x = torch.full((batch_size, t), FILLER[0], dtype=torch.long)
        mask = torch.zeros(batch_size, t, dtype=torch.bool)
        for i, (tokens, m) in enumerate(batch):
            x[i, :len(tokens)] = torch.tensor(tokens)
            mask[i, :len(tokens)] = torch.tensor(m)
        logits = model(x, kept_logits=True)[:, :-1]
        targets, m = model.vocab.rows(x)[:, 1:], mask[:, 1:]
        loss = nn.functional.cross_entropy(logits[m].float(), targets[m])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        acc = (logits[m].argmax(-1) == targets[m]).float().mean().item()
        if on_step is not None:
            on_step(step, loss.item(), acc)
    opt.zero_grad(set_to_none=True)
    return acc


def copy_pool(kept_ids: Sequence[int], lowercase: bool = False) -> list[int]:
    """The kept token ids the corpus copies most and a small model learns slowest: capitalised word pieces
    (names, cities, codes) and 1-3 digit numbers; ``lowercase``: lowercase word pieces too (items, labels,
    e-mail addresses)."""
    from gptoss.tokenizer import get_tokenizer
    from gptoss.train.init import capitalised_piece, lowercase_piece, short_number

    tok = get_tokenizer()
    texts = ((t, tok.decode([t])) for t in kept_ids)
    return [t for t, text in texts
            if short_number(text.removeprefix(" ")) or capitalised_piece(text) or (lowercase and lowercase_piece(text))]
