"""Scratch initialisation (the recipe of the bundled gpt-oss-tiny): its scales, and that it is seeded."""

from __future__ import annotations

import dataclasses
import math

import torch

from gptoss.config import preset
from gptoss.model.transformer import DenseExpertWeight
from gptoss.train.init import STD, init_model


def _cfg():
    return preset("tiny", num_hidden_layers=2, hidden_size=128, num_attention_heads=4, num_key_value_heads=2,
                  head_dim=32, num_experts=4, experts_per_token=2, intermediate_size=128, sliding_window=32,
                  initial_context_length=256, kept_token_ids=tuple(range(600)))


def test_init_scales():
    cfg = _cfg()
    params = dict(init_model(cfg, 0).named_parameters())
    out_std = STD / math.sqrt(2 * cfg.num_hidden_layers)  # residual outputs: the stream does not grow with depth
    for name, want in (("embedding.weight", STD), ("block.0.attn.qkv.weight", STD), ("block.0.mlp.gate.weight", STD),
                       ("block.0.mlp.mlp1_weight.weight", STD), ("unembedding.weight", STD),
                       ("block.1.attn.out.weight", out_std), ("block.1.mlp.mlp2_weight.weight", out_std)):
        got = params[name].std().item()
        assert abs(got - want) < 0.1 * want, (name, got, want)
    for name, p in params.items():
        if name.endswith("bias") or name.endswith("sinks"):
            assert torch.count_nonzero(p) == 0, name
        if name.endswith(".scale"):
            assert torch.all(p == 1.0), name


def test_init_is_seeded_and_trainable():
    a, b, c = init_model(_cfg(), 3), init_model(_cfg(), 3), init_model(_cfg(), 4)
    assert torch.equal(a.embedding.weight, b.embedding.weight)
    assert not torch.equal(a.embedding.weight, c.embedding.weight)
    assert all(isinstance(blk.mlp.mlp1_weight, DenseExpertWeight) for blk in a.block)


def test_shared_digit_rows_train_together_and_export_plain(tmp_path):
    """Number rows are sums of shared (place, digit) vectors while training; export bakes them into plain rows."""
    from gptoss.cli.train_tiny import number_ids
    from gptoss.tokenizer import get_tokenizer
    from gptoss.train.init import share_digits, torch_scale_init
    from gptoss.train.trainer import Trainer, TrainingArgs
    from gptoss.weights.loader import load_transformer

    cfg = dataclasses.replace(_cfg(), kept_token_ids=tuple(sorted(set(range(300)) | number_ids())))
    model = init_model(cfg, 0)
    torch_scale_init(model, 0)
    assert abs(model.embedding.weight.std().item() - 1.0) < 0.05
    assert share_digits(model, 0) == 1110  # every 1-3 digit token ("0".."999", "00".."099", "000")
    tok = get_tokenizer()
    row = {tok.decode([t]): i for i, t in enumerate(cfg.kept_token_ids)}
    emb = model.embedding.weight
    parts = model.embedding.parametrizations.weight[0].parts
    want = (parts[0 * 10 + 1] + parts[1 * 10 + 0] + parts[2 * 10 + 6] + parts[30 + 2]) / 2.0  # "106": 3 digits
    torch.testing.assert_close(emb[row["106"]], want)
    other = next(i for i, t in enumerate(cfg.kept_token_ids) if not tok.decode([t]).strip().isdigit())
    model.embedding.weight[row["7"]].sum().backward()  # one number's loss reaches the vectors every number uses
    assert parts.grad is not None and parts.grad[0 * 10 + 7].abs().sum() > 0 and parts.grad[1].abs().sum() == 0
    before = {"emb": emb[other].detach().clone(), "106": emb[row["106"]].detach().clone()}
    wdir = Trainer(model, TrainingArgs(out_dir=str(tmp_path)), {}).export(tmp_path / "export")
    loaded = load_transformer(wdir, dtype="float32")[0]
    torch.testing.assert_close(loaded.embedding.weight[row["106"]], before["106"].to(torch.bfloat16).float())
    torch.testing.assert_close(loaded.embedding.weight[other], before["emb"].to(torch.bfloat16).float())
    assert not any("parametrizations" in k for k in loaded.state_dict())


def test_shared_spelling_rows_are_letter_sums():
    """Capitalised letter-token rows are their own free vector (zero at first) plus a normalised sum of (place,
    letter), length, capital and leading-space vectors; other tokens keep their own rows; both matrices are
    shared separately. ``capitals_only=False`` takes every letter piece."""
    from gptoss.tokenizer import get_tokenizer
    from gptoss.train.init import SPELLING_PLACES, share_digits, share_spelling

    tok = get_tokenizer()
    ids = {*tok.encode(" Oslo"), *tok.encode("ab"), *tok.encode("42"), *tok.encode(" ,")}
    cfg = dataclasses.replace(_cfg(), kept_token_ids=tuple(sorted(set(range(10)) | ids)))
    model = init_model(cfg, 0)
    rows = {tok.decode([t]): i for i, t in enumerate(cfg.kept_token_ids)}
    plain = {k: model.embedding.weight[rows[k]].detach().clone() for k in ("42", "ab")}
    assert share_spelling(model, 0) == 1  # " Oslo" only: not "ab" (lower case), "42" or punctuation
    n = SPELLING_PLACES * 26 + SPELLING_PLACES + 2
    f = [26 * i + ord(c) - ord("a") for i, c in enumerate("oslo")] + [26 * SPELLING_PLACES + 3, n - 2, n - 1]
    for matrix in (model.embedding, model.unembedding):
        parts = matrix.parametrizations.weight[0].parts
        torch.testing.assert_close(matrix.weight[rows[" Oslo"]], parts[f].sum(0) / len(f) ** 0.5)
    for k, v in plain.items():
        torch.testing.assert_close(model.embedding.weight[rows[k]], v)
    with torch.no_grad():  # the row's own part adds to the shared sum
        model.embedding.parametrizations.weight.original[rows[" Oslo"]] += 1.0
    parts = model.embedding.parametrizations.weight[0].parts
    torch.testing.assert_close(model.embedding.weight[rows[" Oslo"]], parts[f].sum(0) / len(f) ** 0.5 + 1.0)
    assert share_spelling(init_model(cfg, 0), 0, capitals_only=False) == 2  # " Oslo" and "ab"
    stacked = init_model(cfg, 0)  # under the digits' parametrization too, the own rows start at zero
    assert share_digits(stacked, 0) == 1 and share_spelling(stacked, 0) == 1
    assert not stacked.unembedding.parametrizations.weight.original[rows[" Oslo"]].any()
    parts = stacked.unembedding.parametrizations.weight[1].parts
    torch.testing.assert_close(stacked.unembedding.weight[rows[" Oslo"]], parts[f].sum(0) / len(f) ** 0.5)


def test_shared_codes_give_each_capitalised_piece_a_distinct_triple():
    """Capitalised pieces' rows are normalised sums of 3 of 48 shared vectors, a different triple for each piece,
    in both matrices; lower-case pieces, numbers and punctuation keep their own rows."""
    from gptoss.tokenizer import get_tokenizer
    from gptoss.train.init import CODE_ACTIVE, CODE_PARTS, share_codes

    tok = get_tokenizer()
    words = (" Oslo", " Paris", " Hugo", " Evans", " Maria", "Berlin")
    ids = {t for w in words for t in tok.encode(w)} | {*tok.encode(" the"), *tok.encode("42")}
    cfg = dataclasses.replace(_cfg(), kept_token_ids=tuple(sorted(set(range(10)) | ids)))
    model = init_model(cfg, 0)
    rows = {tok.decode([t]): i for i, t in enumerate(cfg.kept_token_ids)}
    plain = model.embedding.weight[rows[" the"]].detach().clone()
    capitalised = [w for w in rows if w.strip()[:1].isupper() and w.strip().isalpha()]
    assert share_codes(model, 0) == len(capitalised) >= 5
    param = model.embedding.parametrizations.weight[0]
    codes = param.compose.nonzero()
    triples = {tuple(codes[codes[:, 0] == r, 1].tolist()) for r in range(len(capitalised))}
    assert len(triples) == len(capitalised) and all(len(t) == CODE_ACTIVE for t in triples)
    assert param.parts.shape[0] == CODE_PARTS
    for i, r in enumerate(param.rows.tolist()):
        want = param.parts[codes[codes[:, 0] == i, 1]].sum(0) / CODE_ACTIVE ** 0.5
        torch.testing.assert_close(model.embedding.weight[r], want)
    torch.testing.assert_close(model.embedding.weight[rows[" the"]], plain)


def test_lowercase_codes_add_a_distinct_triple_to_each_lowercase_piece():
    """With ``lowercase``, lowercase pieces (items, e-mail parts, argument names) get their own row plus a code of a
    second shared set, the own row zero at first; capitalised codes are unchanged and no triple is used twice."""
    from gptoss.tokenizer import get_tokenizer
    from gptoss.train.init import CODE_ACTIVE, lowercase_piece, share_codes

    tok = get_tokenizer()
    texts = (" Oslo", " Paris", " toaster", " the", "thomas.das@example.org", "duration_minutes", "42", ",")
    ids = {t for w in texts for t in tok.encode(w)}
    cfg = dataclasses.replace(_cfg(), kept_token_ids=tuple(sorted(set(range(10)) | ids)))
    rows = {tok.decode([t]): i for i, t in enumerate(cfg.kept_token_ids)}
    assert lowercase_piece(" toaster") and lowercase_piece("@example") and lowercase_piece("_minutes")
    assert not (lowercase_piece(" Oslo") or lowercase_piece("42") or lowercase_piece(",") or lowercase_piece(". x"))
    lower = sorted(r for w, r in rows.items() if lowercase_piece(w))
    capitals = init_model(cfg, 0)
    n_capitals = share_codes(capitals, 0)
    model = init_model(cfg, 0)
    assert share_codes(model, 0, lowercase=True) == n_capitals + len(lower) and len(lower) >= 6
    first, second = model.embedding.parametrizations.weight
    assert torch.equal(first.compose, capitals.embedding.parametrizations.weight[0].compose)
    assert sorted(second.rows.tolist()) == lower and second.residual and not first.residual
    triples = [tuple(c.nonzero().flatten().tolist()) for p in (first, second) for c in p.compose]
    assert len(set(triples)) == len(triples) and all(len(t) == CODE_ACTIVE for t in triples)
    own = model.embedding.parametrizations.weight.original
    assert not own[second.rows].any() and own[rows[","]].any()  # coded rows start as their code alone
    r = rows[" toaster"]
    k = second.rows.tolist().index(r)
    torch.testing.assert_close(model.embedding.weight[r], second.compose[k] @ second.parts)


def test_paired_codes_share_a_triple_between_a_piece_and_its_prefixed_forms():
    """With ``paired``, ``" DIS"`` and ``"DIS"`` (a ticker in prose and in JSON) share one triple, the prefixed form
    adding one prefix vector; unrelated pieces still never share a triple, and without ``paired`` nothing changes."""
    from gptoss.tokenizer import get_tokenizer
    from gptoss.train.init import CODE_ACTIVE, CODE_PARTS, PREFIXES, bare_piece, share_codes

    tok = get_tokenizer()
    texts = (" DIS", "DIS", " Paris", "Paris", " Oslo", " item", "item", " das", "das", " the", "42")
    ids = {t for w in texts for t in tok.encode(w)}
    cfg = dataclasses.replace(_cfg(), kept_token_ids=tuple(sorted(set(range(10)) | ids)))
    assert bare_piece(" DIS") == (" ", "DIS") and bare_piece(".das") == (".", "das") and bare_piece("-") == ("", "-")

    def codes(model) -> dict[str, tuple[int, ...]]:
        return {tok.decode([cfg.kept_token_ids[r]]): tuple(c.nonzero().flatten().tolist())
                for p in model.embedding.parametrizations.weight
                for r, c in zip(p.rows.tolist(), p.compose, strict=True)}

    plain, again, paired = init_model(cfg, 0), init_model(cfg, 0), init_model(cfg, 0)
    n = share_codes(plain, 0, lowercase=True)
    assert share_codes(again, 0, lowercase=True) == share_codes(paired, 0, lowercase=True, paired=True) == n
    before, after = codes(plain), codes(paired)
    assert codes(again) == before  # deterministic; without pairing the shipped recipe's init is unchanged
    assert before[" DIS"][:CODE_ACTIVE] != before["DIS"]  # unpaired: unrelated triples
    space = CODE_PARTS + PREFIXES.index(" ")
    for word in ("DIS", "Paris", "item", "das"):
        assert after[" " + word] == (*after[word], space)
    bare = [c for w, c in after.items() if bare_piece(w)[0] == ""]
    assert len(set(bare)) == len(bare) and all(len(c) == CODE_ACTIVE for c in bare)
    assert after[" Oslo"][:CODE_ACTIVE] not in bare and after[" the"][:CODE_ACTIVE] not in bare
    assert paired.embedding.parametrizations.weight[0].parts.shape[0] == CODE_PARTS + len(PREFIXES)
