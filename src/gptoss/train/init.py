"""Initialisation for training a gpt-oss model from scratch (not the test fixtures' realistic scales).

Small normal weights (std 0.02), residual output projections scaled by 1/sqrt(2 L) so the residual stream
does not grow with depth, zero biases and sinks, unit norm scales. Experts are dense floats here
(:func:`gptoss.train.experts.dequantize_experts`); export packs them to MXFP4.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gptoss.config import ModelConfig
from gptoss.model.transformer import DenseExpertWeight, Transformer
from gptoss.train.experts import dequantize_experts

STD = 0.02


@torch.no_grad()
def init_model(cfg: ModelConfig, seed: int) -> Transformer:
    """A freshly initialised float32 Transformer with dense (trainable) expert weights."""
    gen = torch.Generator().manual_seed(seed)
    model = dequantize_experts(Transformer(cfg), torch.float32).float()
    out_std = STD / math.sqrt(2 * cfg.num_hidden_layers)
    for name, p in model.named_parameters():
        if name.endswith(".scale"):
            p.fill_(1.0)
        elif name.endswith("bias") or name.endswith("sinks"):
            p.zero_()
        else:
            std = out_std if name.endswith(("attn.out.weight", "mlp2_weight.weight")) else STD
            p.copy_(torch.randn(p.shape, generator=gen) * std)
    for block in model.block:
        assert isinstance(block.mlp.mlp1_weight, DenseExpertWeight)
    return model


@torch.no_grad()
def torch_scale_init(model: Transformer, seed: int) -> None:
    """Embedding ~ N(0, 1), every other matrix ~ N(0, 1/(3 fan_in)) (PyTorch's ``nn.Linear`` scale); biases,
    sinks and norm scales as they were. Learns to copy much faster than the std-0.02 recipe
    (``scripts/probe_copy.py``)."""
    gen = torch.Generator().manual_seed(seed + 1)
    for name, p in model.named_parameters():
        if p.dim() >= 2:
            std = 1.0 if name == "embedding.weight" else 1.0 / (3 * p.shape[-1]) ** 0.5
            p.copy_(torch.randn(p.shape, generator=gen) * std)


class ComposedRows(nn.Module):
    """A parametrization: the weight's rows ``rows`` are ``compose @ parts`` (learned shared vectors), plus the
    rows' own free values when ``residual`` (those start at zero, so the shared part leads)."""

    def __init__(self, rows: torch.Tensor, compose: torch.Tensor, parts: nn.Parameter, residual: bool = False) -> None:
        super().__init__()
        self.register_buffer("rows", rows)
        self.register_buffer("compose", compose)
        self.parts = parts
        self.residual = residual

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        shared = self.compose @ self.parts
        return weight.index_put((self.rows,), weight[self.rows] + shared if self.residual else shared)


def share_digits(model: Transformer, seed: int) -> int:
    """Train the embedding and unembedding rows of 1-3 digit number tokens as sums of 33 shared vectors (one
    per place and digit, one per length), separately for the two matrices; returns how many rows.

    A 4-layer model does not learn to copy ~1,000 rarely seen number tokens by identity (a 1,000-token copy
    probe stays near 7 % after 200 steps); with the rows built from shared digit vectors, what it learns about
    one number serves all of them (96 %). Export bakes the rows into plain weights (``Trainer.export``): the
    checkpoint and the architecture are unchanged."""

    def features(text: str) -> list[int] | None:
        if not short_number(text):
            return None
        return [30 + len(text) - 1] + [10 * i + int(ch) for i, ch in enumerate(text)]

    return _share_rows(model, seed, 33, features)


SPELLING_PLACES = 8


def share_spelling(model: Transformer, seed: int, capitals_only: bool = True) -> int:
    """Like :func:`share_digits`, for word pieces made of ASCII letters (with or without a leading space): rows
    are sums of shared (place, letter) vectors for the first 8 letters, plus length, capital and leading-space
    vectors, added to each row's own free vector (zero at first). By default only capitalised pieces (the names,
    cities and codes the corpus copies): shared over all ~1,850 letter rows, a 600-step pilot copied names no
    better, the common words' rows being tied to their spelling too (README, gpt-oss-tiny)."""
    n = SPELLING_PLACES * 26 + SPELLING_PLACES + 2

    def features(text: str) -> list[int] | None:
        word = text[1:] if text.startswith(" ") else text
        if not (word.isascii() and word.isalpha()) or (capitals_only and not capitalised_piece(text)):
            return None
        f = [26 * i + ord(ch) - ord("a") for i, ch in enumerate(word.lower()[:SPELLING_PLACES])]
        f.append(26 * SPELLING_PLACES + min(len(word), SPELLING_PLACES) - 1)
        f += [n - 2] if word[0].isupper() else []
        f += [n - 1] if text.startswith(" ") else []
        return f

    return _share_rows(model, seed + 10, n, features, residual=True)


CODE_PARTS, CODE_ACTIVE = 48, 3


def short_number(text: str) -> bool:
    """A 1-3 digit token: o200k splits every number into such groups."""
    return text.isascii() and text.isdigit() and len(text) <= 3


def capitalised_piece(text: str) -> bool:
    """An ASCII-letter word piece that starts with a capital, with or without a leading space: the names,
    cities and codes the corpus copies."""
    word = text.removeprefix(" ")
    return word.isascii() and word.isalpha() and word[0].isupper()


PREFIXES = (" ", ".", "@", "_", "-")  # the one-character prefixes a coded piece may carry (:func:`lowercase_piece`)


def bare_piece(text: str) -> tuple[str, str]:
    """(prefix, word) of a word piece: ``" DIS"`` -> (" ", "DIS"), ``"DIS"`` -> ("", "DIS")."""
    return (text[0], text[1:]) if text[:1] in PREFIXES and len(text) > 1 else ("", text)


def lowercase_piece(text: str) -> bool:
    """A lowercase ASCII-letter word piece, bare or after one space, dot, "@", "_" or "-": the items, labels,
    e-mail addresses and argument names the corpus copies (``" toaster"``, ``".das"``, ``"@example"``)."""
    word = bare_piece(text)[1]
    return word.isascii() and word.isalpha() and word[0].islower()


def share_codes(model: Transformer, seed: int, lowercase: bool = False, paired: bool = False) -> int:
    """Capitalised word pieces get rows that are sums of 3 of 48 shared vectors, a distinct random triple per
    token: a low-rank code (as the digits' is) that copying can carry through the 32-wide attention heads, where
    each piece's own identity is rare in the corpus. ``lowercase``: lowercase pieces too (:func:`lowercase_piece`),
    each with a distinct triple of a second set added to its own row, which keeps a common word's meaning.

    ``paired``: a piece and its prefixed forms (``"DIS"``, ``" DIS"``; ``"das"``, ``".das"``) share one triple, and
    a prefixed form adds one shared vector per prefix. A value copied from prose (``" DIS"``) into JSON (``"DIS"``)
    then keeps its code and only drops the prefix vector, instead of jumping to an unrelated triple."""
    import random

    rng, used, by_word = random.Random(seed + 20), set(), {}
    n_parts = CODE_PARTS + (len(PREFIXES) if paired else 0)

    def code(text: str, wanted) -> list[int] | None:
        if not wanted(text):
            return None
        prefix, word = bare_piece(text) if paired else ("", text)
        if word not in by_word:  # a new word: a triple no other word has
            triple: tuple[int, ...] = ()
            while not triple or triple in used:
                triple = tuple(sorted(rng.sample(range(CODE_PARTS), CODE_ACTIVE)))
            used.add(triple)
            by_word[word] = triple
        triple = by_word[word]
        return [*triple, *([CODE_PARTS + PREFIXES.index(prefix)] if prefix else [])]

    n = _share_rows(model, seed + 20, n_parts, lambda text: code(text, capitalised_piece))
    if lowercase:
        n += _share_rows(model, seed + 21, n_parts, lambda text: code(text, lowercase_piece), residual=True)
    return n


def _share_rows(model: Transformer, seed: int, n_parts: int, features, residual: bool = False) -> int:
    """Reparametrize the kept-vocabulary rows whose token text has ``features(text)`` (indices into ``n_parts``
    shared vectors) as normalised sums of those vectors, separately in the embedding and the unembedding
    (``residual``: plus the rows' own values, zeroed here)."""
    from torch.nn.utils import parametrize

    from gptoss.tokenizer import get_tokenizer

    kept = model.config.kept_token_ids
    assert kept is not None, "rows are shared only for a trimmed vocabulary"
    tok, gen = get_tokenizer(), torch.Generator().manual_seed(seed + 2)
    rows, comp = [], []
    for row, t in enumerate(kept):
        f = features(tok.decode([t]))
        if f:
            c = torch.zeros(n_parts)
            c[f] = 1.0
            rows.append(row)
            comp.append(c / len(f) ** 0.5)
    if not rows:
        return 0
    index, compose = torch.tensor(rows), torch.stack(comp)
    for layer in (model.embedding, model.unembedding):
        std = float(layer.weight.detach().std())
        parts = nn.Parameter(torch.randn(n_parts, layer.weight.shape[1], generator=gen) * std)
        if residual:  # zero the stored rows (under an earlier parametrization, ``layer.weight`` is computed)
            with torch.no_grad():
                stored = layer.parametrizations.weight.original if parametrize.is_parametrized(layer) else layer.weight
                stored[index] = 0.0
        parametrize.register_parametrization(layer, "weight", ComposedRows(index, compose, parts, residual))
    return len(rows)
