"""Probe: how fast does a gpt-oss-shaped model learn to copy? (diagnosis for gpt-oss-tiny's copy failure)

Task: 3-8 random tokens, 0-30 filler tokens, a separator, then the same tokens again; loss and accuracy on
the repeated part only. Trains the gptoss Transformer at the tiny model's shape with a plain AdamW loop
(constant lr, clip 1.0) and, with --vanilla, a plain ``torch.nn.TransformerEncoder`` of the same width for
comparison. Session 11: 150 steps of 16 over 20 tokens give ~47% for gptoss and ~91% for the vanilla model.

Session 12 (150 steps, lr 1e-3, 20 tokens): ``--init torch`` (embedding N(0, 1), every other weight at PyTorch's
``nn.Linear`` scale N(0, 1/(3 fan_in))) reaches 91-92%, as the vanilla model does; the embedding at std 1 alone
gives 80%; dropping only the 1/sqrt(2L) output-projection factor gives 48%; at lr 3e-3 ``--init torch`` gives 23%.
But with ``--vocab 1000`` (as many distinct number tokens as o200k has: copying must work for tokens seen
rarely) everything is slow after 200 steps: recipe init 5%, ``--init torch`` 6%, the vanilla model 20%,
``--digit-embeddings`` 15%. A real corpus run with ``--init torch`` at lr 1e-3 stayed at 17-49% digit accuracy
from step 200 to 400 (``scripts/digit_accuracy.py``), so the init alone does not fix gpt-oss-tiny.

Session 14 (``--vocab 1000``, 200 steps, lr 1e-3): ``--init torch --shared-digits`` -- number rows of the
embedding and the unembedding trained as sums of 33 shared (place, digit) and length vectors -- reaches 96.0%
(step 100: 39%, step 150: 95%), against 7.0% for ``--init torch`` alone in the same run. With the recipe init
it gives 14% (lr 1e-3) and 0% (lr 3e-3); one shared set for both matrices (tied) gave 3%. Distance slows it
but does not stop it: ``--gap 150`` (past the 128-token band) 67% at step 200, still rising; ``--gap 150
--distractors`` 70%; ``--distractors`` alone 96%. A 400-step train-tiny pilot with the same flags did not copy
better than before (README), so the corpus's harder part is elsewhere (values retrieved by role from varied
templates, many families learned at once), not distance or distractors.

Session 15: the long context is what stalls it. ``--prefix 300`` (a fixed 300-token run before every example, as
a system prompt is) gives 13% at step 200 against 96% without; ``--prefix 300 --prefix-from 150`` (short examples
first) drops to 2% when the prefix appears at step 150 and reaches 99% at step 200, 100% at 250. train-tiny's
``--curriculum`` does the same on the real corpus: the bundled model copies numbers since.

Session 16 (``--names --vocab 400``, 200 steps): plain rows 27%, ``--kv-heads 8`` 26%, ``--shared-spelling``
(capitalised pieces, own rows + shared sum) 73%, ``--shared-codes`` 89%. None carried over to the corpus alone;
this task run first (``gptoss.train.copy_warmup``, train-tiny ``--copy-warmup 200``) did.

    .venv/bin/python scripts/probe_copy.py --steps 150 [--vanilla] [--vocab 20] [--lr 1e-3] [--init torch]
                                           [--shared-digits]
"""

from __future__ import annotations

import argparse
import random
import time

import torch
import torch.nn as nn

from gptoss.cli.train_tiny import number_ids
from gptoss.config import preset
from gptoss.train.init import init_model, share_codes, share_digits, share_spelling, torch_scale_init


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--gap", type=int, default=0,
                   help="extra filler between the tokens and their copy (0-30 more are added at random)")
    p.add_argument("--distractors", action="store_true",
                   help="the filler holds other numbers too, as a conversation does around the value to copy")
    p.add_argument("--prefix", type=int, default=0,
                   help="a fixed run of this many tokens before every example, as a system prompt is")
    p.add_argument("--prefix-from", type=int, default=0,
                   help="with --prefix: add it only from this step on (a short-context curriculum first)")
    p.add_argument("--shared-spelling", action="store_true",
                   help="letter tokens' rows as sums of shared (place, letter) vectors (train.init.share_spelling)")
    p.add_argument("--shared-codes", action="store_true",
                   help="capitalised tokens' rows as sums of 3 of 48 shared vectors (train.init.share_codes)")
    p.add_argument("--names", action="store_true",
                   help="copy the corpus's name and city tokens (302 ids) instead of number tokens")
    p.add_argument("--kv-heads", type=int, default=2, help="key/value heads (the tiny model has 2)")
    p.add_argument("--head-dim", type=int, default=32, help="attention head width (the tiny model has 32)")
    p.add_argument("--vocab", type=int, default=20, help="distinct tokens to copy")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--vanilla", action="store_true", help="train nn.TransformerEncoder instead")
    p.add_argument("--init", choices=["recipe", "torch"], default="recipe",
                   help="recipe: gptoss.train.init (std 0.02); torch: embedding std 1, weights at nn.Linear scale")
    p.add_argument("--digit-embeddings", action="store_true",
                   help="number tokens' embedding and unembedding rows built from shared per-digit vectors")
    p.add_argument("--shared-digits", action="store_true",
                   help="train number tokens' embedding and unembedding rows as sums of shared (place, digit) and "
                        "length vectors throughout training, not only at init (gptoss.train.init.share_digits)")
    args = p.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    nums = sorted(name_ids())[:args.vocab] if args.names else sorted(number_ids())[:args.vocab]
    rng = random.Random(0)
    prefix = [random.Random(1).choice([0, 1, 2]) for _ in range(args.prefix)]

    def example(step: int) -> tuple[list[int], list[bool]]:
        n = rng.randint(3, 8)
        xs = [rng.choice(nums) for _ in range(n)]
        filler = [rng.choice([0, 1, 2]) for _ in range(args.gap + rng.randint(0, 30))]
        if args.distractors:  # one in eight filler tokens is another number
            filler = [rng.choice(nums) if rng.random() < 0.125 else f for f in filler]
        pre = prefix if step >= args.prefix_from else []
        return pre + xs + filler + [3] + xs, [False] * (len(pre) + n + len(filler) + 1) + [True] * n

    if args.vanilla:
        ids = sorted(set(nums) | {0, 1, 2, 3})
        row = {t: i for i, t in enumerate(ids)}

        class Vanilla(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.emb, self.pos = nn.Embedding(len(ids), 256), nn.Embedding(128, 256)
                layer = nn.TransformerEncoderLayer(256, 8, 1024, 0.0, batch_first=True, norm_first=True)
                self.layers = nn.TransformerEncoder(layer, 4, enable_nested_tensor=False)
                self.out = nn.Linear(256, len(ids))

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                t = x.shape[1]
                h = self.emb(x) + self.pos(torch.arange(t))
                return self.out(self.layers(h, mask=nn.Transformer.generate_square_subsequent_mask(t), is_causal=True))

        model: nn.Module = Vanilla()

        def rows(x: torch.Tensor) -> torch.Tensor:
            return x.apply_(lambda t: row[t])

        def logits(x: torch.Tensor) -> torch.Tensor:
            return model(x)
    else:
        kept = tuple(sorted(set(nums) | {0, 1, 2, 3}))
        cfg = preset("tiny", num_hidden_layers=4, hidden_size=256, num_attention_heads=8,
                     num_key_value_heads=args.kv_heads, head_dim=args.head_dim, num_experts=8, experts_per_token=2,
                     intermediate_size=256, sliding_window=128, initial_context_length=4096, kept_token_ids=kept)
        gm = init_model(cfg, 0)
        if args.init == "torch":
            torch_scale_init(gm, 0)
        if args.digit_embeddings:
            digit_rows(gm, kept)
        if args.shared_digits:
            share_digits(gm, 0)
        if args.shared_spelling:
            print(f"shared spelling: {share_spelling(gm, 0)} rows", flush=True)
        if args.shared_codes:
            print(f"shared codes: {share_codes(gm, 0)} rows", flush=True)
        gm.train()
        gm.requires_grad_(True)
        gm.rope.requires_grad_(False)
        model = gm

        def rows(x: torch.Tensor) -> torch.Tensor:
            return x

        def logits(x: torch.Tensor) -> torch.Tensor:
            return gm(x, kept_logits=True)

    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=args.lr, betas=(0.9, 0.95))
    start = time.time()
    for step in range(1, args.steps + 1):
        batch = [example(step) for _ in range(16)]
        t = max(len(tokens) for tokens, _ in batch)
        x = torch.zeros(16, t, dtype=torch.long)
        mask = torch.zeros(16, t, dtype=torch.bool)
        for i, (tokens, m) in enumerate(batch):
            x[i, :len(tokens)] = torch.tensor(tokens)
            mask[i, :len(tokens)] = torch.tensor(m)
        if args.vanilla:
            x = rows(x)
        out = logits(x)[:, :-1]
        targets = (x if args.vanilla else model.vocab.rows(x))[:, 1:]
        m = mask[:, 1:]
        loss = nn.functional.cross_entropy(out[m], targets[m])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0 or step == args.steps:
            acc = (out[m].argmax(-1) == targets[m]).float().mean().item()
            print(f"step {step}: loss {loss.item():.3f}, copy accuracy {acc:.3f} ({time.time() - start:.0f} s)",
                  flush=True)


def name_ids() -> set[int]:
    """Token ids of the corpus's first names, last names and cities (as they follow a space)."""
    from gptoss.tokenizer import get_tokenizer
    from gptoss.train.world import CITIES, FIRST_NAMES, LAST_NAMES

    tok = get_tokenizer()
    return {t for w in (*FIRST_NAMES, *LAST_NAMES, *CITIES) for t in tok.encode(" " + w)}


@torch.no_grad()
def digit_rows(model: nn.Module, kept: tuple[int, ...]) -> None:
    """A 1-3 digit token's embedding = its length vector + one vector per (place, digit), normalised; its
    unembedding row the same direction at the unembedding's scale: all number tokens share what copying needs."""
    from gptoss.tokenizer import get_tokenizer

    tok, gen = get_tokenizer(), torch.Generator().manual_seed(2)
    h = model.embedding.weight.shape[1]
    digits, lengths = torch.randn(3, 10, h, generator=gen), torch.randn(3, h, generator=gen)
    emb_std, out_std = model.embedding.weight.std(), model.unembedding.weight.std()
    for row, t in enumerate(kept):
        text = tok.decode([t])
        if text.isdigit() and len(text) <= 3:
            v = lengths[len(text) - 1] + sum(digits[i, int(c)] for i, c in enumerate(text))
            v = v / v.std()
            model.embedding.weight[row] = v * emb_std
            model.unembedding.weight[row] = v * out_std


if __name__ == "__main__":
    main()
