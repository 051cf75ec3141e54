"""Continuous batching: sequences joining and leaving a running batch decode exactly as they would alone."""

from __future__ import annotations

import pytest
import torch

import gptoss
from gptoss.engine import SamplingParams
from gptoss.engine.continuous import ContinuousBatch, run_all


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return gptoss.load(tiny_checkpoint, dtype="float32")


def ids(n: int, seed: int) -> list[int]:
    return torch.randint(0, 199998, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def test_joining_mid_decode_matches_alone(model):
    """Sequences added at different steps (with prompts longer than one prefill chunk and past the
    sliding window) produce the same greedy tokens as one-by-one generation."""
    prompts = [ids(5, 1), ids(23, 2), ids(3, 3), ids(40, 4)]
    lengths = [12, 4, 9, 7]
    batch = ContinuousBatch(model.transformer, prefill_chunk=16)
    seqs = [batch.add(prompts[0], SamplingParams(max_tokens=lengths[0], temperature=0))]
    schedule = {2: 1, 3: 2, 6: 3}  # step -> the sequence that joins before it
    step = 0
    while not batch.idle or len(seqs) < len(prompts):
        if step in schedule:
            k = schedule[step]
            seqs.append(batch.add(prompts[k], SamplingParams(max_tokens=lengths[k], temperature=0)))
        batch.advance()
        step += 1
        assert step < 200
    for seq, p, n in zip(seqs, prompts, lengths, strict=True):
        assert seq.generated == model.generate(p, max_tokens=n, temperature=0)
        assert seq.finish_reason == "length"
    assert max(batch.step_sizes) >= 3  # they really shared forwards
    assert batch.cache is None and batch.rows == []  # everyone left


def test_drop_frees_the_row_and_others_continue(model):
    a, b = ids(6, 5), ids(9, 6)
    batch = ContinuousBatch(model.transformer)
    sa = batch.add(a, SamplingParams(max_tokens=10, temperature=0))
    sb = batch.add(b, SamplingParams(max_tokens=10, temperature=0))
    batch.advance()
    batch.advance()
    assert batch.step_sizes[-1] == 2
    batch.drop(sa)
    batch.advance()
    assert len(batch.rows) == 1 and batch.step_sizes[-1] == 1
    run_all(batch)
    assert len(sa.generated) == 2 and sa.finish_reason is None
    assert sb.generated == model.generate(b, max_tokens=10, temperature=0)


def test_stop_tokens_processors_and_seeds(model):
    p = ids(7, 7)
    free = model.generate(p, max_tokens=8, temperature=0)
    stop = free[3]
    batch = ContinuousBatch(model.transformer)
    stopped = batch.add(p, SamplingParams(max_tokens=8, temperature=0, stop=(stop,)))
    banned = free[0]

    def ban(tokens, logits):
        logits = logits.clone()
        logits[banned] = float("-inf")
        return logits

    masked = batch.add(p, SamplingParams(max_tokens=4, temperature=0), ban)
    seeded = [batch.add(p, SamplingParams(max_tokens=6, temperature=1.0, seed=3)) for _ in range(2)]
    run_all(batch)
    assert stopped.generated == free[:free.index(stop) + 1] and stopped.finish_reason == "stop"
    assert banned not in masked.generated
    assert seeded[0].generated == seeded[1].generated  # same seed, same draw, in one batch


def test_bad_prompt_is_refused(model):
    batch = ContinuousBatch(model.transformer)
    with pytest.raises(ValueError, match="token id"):
        batch.add([1, -3], SamplingParams())
    with pytest.raises(ValueError, match="at least one token"):
        batch.add([], SamplingParams())


def test_batched_sampling_draws_from_the_distribution():
    """sample_rows: exact draws from softmax(logits / T), masked tokens never, greedy rows the argmax."""
    from gptoss.engine.continuous import Seq, sample_rows

    logits = torch.full((3, 50), float("-inf"))
    logits[:, 3], logits[:, 7], logits[:, 9] = 0.0, 1.0, 2.0  # p ~ 0.09, 0.245, 0.665 at T=1
    seqs = [Seq([1], SamplingParams(temperature=1.0)), Seq([1], SamplingParams(temperature=0)),
            Seq([1], SamplingParams(temperature=2.0))]
    for k, s in enumerate(seqs):
        if s.params.temperature > 0:
            s.generator = torch.Generator().manual_seed(k)
    counts = [dict.fromkeys((3, 7, 9), 0) for _ in seqs]
    for _ in range(3000):
        for k, tok in enumerate(sample_rows(logits, seqs)):
            counts[k][tok] += 1  # KeyError if a masked token were drawn
    assert counts[1] == {3: 0, 7: 0, 9: 3000}
    p = torch.softmax(torch.tensor([0.0, 1.0, 2.0]), 0).tolist()
    for tok, want in zip((3, 7, 9), p, strict=True):
        assert abs(counts[0][tok] / 3000 - want) < 0.035
    p2 = torch.softmax(torch.tensor([0.0, 0.5, 1.0]), 0).tolist()  # T=2 flattens
    assert abs(counts[2][9] / 3000 - p2[2]) < 0.035


@pytest.fixture(scope="module")
def trimmed():
    """The bundled model: a trimmed vocabulary (its batch samples over the kept ids only)."""
    from gptoss.models import default_model_path

    return gptoss.load(default_model_path(), dtype="float32")


def test_trimmed_vocabulary_is_sampled_over_kept_ids(trimmed):
    kept = set(trimmed.transformer.vocab.kept.tolist())
    from openai_harmony import Conversation, Role

    from gptoss.harmony.render import harmony_encoding, system_message, user_message

    conv = Conversation.from_messages([system_message("low"), user_message("What is 12 * 7?")])
    prompt = harmony_encoding().render_conversation_for_completion(conv, Role.ASSISTANT)
    free = trimmed.generate(prompt, max_tokens=6, temperature=0)
    batch = ContinuousBatch(trimmed.transformer)
    greedy = batch.add(prompt, SamplingParams(max_tokens=6, temperature=0))
    banned = free[0]

    def ban(tokens, logits):
        assert logits.shape[-1] == trimmed.transformer.config.vocab_size  # processors see the full vocabulary
        logits = logits.clone()
        logits[banned] = float("-inf")
        return logits

    masked = batch.add(prompt, SamplingParams(max_tokens=4, temperature=0), ban)
    sampled = batch.add(prompt, SamplingParams(max_tokens=24, temperature=1.5, seed=11))
    run_all(batch)
    assert greedy.generated == free  # same tokens as full-vocabulary decoding
    assert banned not in masked.generated and set(masked.generated) <= kept
    assert set(sampled.generated) <= kept


def test_row_space_draw_equals_full_vocabulary_draw(trimmed):
    """A seeded draw over the kept columns picks the same token as the draw over all 201,088 logits."""
    from gptoss.engine.continuous import Seq, sample_rows

    vocab = trimmed.transformer.vocab
    rows = torch.randn(4, len(vocab.kept), generator=torch.Generator().manual_seed(0)) * 3

    def seqs(params):
        out = []
        for k, p in enumerate(params):
            s = Seq([1], p, None, None)
            s.generator = torch.Generator().manual_seed(100 + k)
            out.append(s)
        return out

    params = [SamplingParams(temperature=1.0), SamplingParams(temperature=0.7, top_p=0.9),
              SamplingParams(temperature=1.2, top_k=20), SamplingParams(temperature=1.0, top_p=0.5, top_k=5)]
    in_rows = sample_rows(rows, seqs(params))
    in_full = sample_rows(vocab.expand(rows), seqs(params))
    assert [int(vocab.kept[r]) for r in in_rows] == in_full


def test_a_processor_may_force_an_id_outside_the_trimmed_vocabulary(trimmed):
    """A grammar can allow only a spelling the trimmed model has no row for (a JSON key's "_c", say). The
    token is then drawn from what the processor allows -- never a kept id it ruled out."""
    from gptoss.engine.generate import BatchGenerator

    vocab = trimmed.transformer.vocab
    outside = [i for i in range(5000) if i not in set(vocab.kept.tolist())][:3]  # ids with no row

    def only_outside(tokens, logits):
        masked = torch.full_like(logits, float("-inf"))
        masked[outside] = 0.0  # what HarmonyConstraint yields when every allowed id has -inf logits
        return masked

    prompt = [200006, 1428, 200008]
    batch = ContinuousBatch(trimmed.transformer)
    greedy = batch.add(prompt, SamplingParams(max_tokens=3, temperature=0), only_outside)
    drawn = batch.add(prompt, SamplingParams(max_tokens=6, temperature=1.0, seed=4), only_outside)
    free = batch.add(prompt, SamplingParams(max_tokens=3, temperature=0))
    run_all(batch)
    assert greedy.generated == [outside[0]] * 3 and set(drawn.generated) <= set(outside)
    assert free.generated == trimmed.generate(prompt, max_tokens=3, temperature=0)
    gen = BatchGenerator(trimmed.transformer, [prompt], SamplingParams(max_tokens=2, temperature=0),
                         logits_processors=[only_outside])
    events = list(gen)
    assert [e.token for e in events] == [outside[0]] * 2 and all(e.logprob == float("-inf") for e in events)
