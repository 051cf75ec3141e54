"""Generation: stop tokens, limits, batching equals one-by-one, reproducibility."""

from __future__ import annotations

import pytest
import torch

import gptoss
from gptoss.engine import BatchGenerator, SamplingParams


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return gptoss.load(tiny_checkpoint, dtype="float32")


def ids(n: int, seed: int) -> list[int]:
    return torch.randint(0, 199998, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def test_greedy_generation_is_the_argmax_chain(model):
    p = ids(10, 0)
    out = model.generate(p, max_tokens=6, temperature=0)
    seq = list(p)
    for tok in out:
        assert tok == int(model.logits(seq)[-1].argmax())
        seq.append(tok)


def test_batched_equals_one_by_one(model):
    prompts = [ids(20, 1), ids(5, 2), ids(13, 3)]  # different lengths, past the window of 8
    batched = model.generate_batch(prompts, max_tokens=12, temperature=0)
    assert batched == [model.generate(p, max_tokens=12, temperature=0) for p in prompts]
    sampled = model.generate_batch(prompts, max_tokens=12, temperature=1.0, seed=5)
    assert sampled == [model.generate(p, max_tokens=12, temperature=1.0, seed=5) for p in prompts]


def test_seeded_sampling_reproducible(model):
    p = ids(8, 4)
    a = model.generate(p, max_tokens=16, seed=11)
    assert a == model.generate(p, max_tokens=16, seed=11)
    assert a != model.generate(p, max_tokens=16, seed=12)


def test_stop_token_ends_generation(model):
    p = ids(8, 5)
    free = model.generate(p, max_tokens=10, temperature=0)
    stop = free[3]
    out = model.generate(p, max_tokens=10, temperature=0, stop=[stop])
    assert out == free[: free.index(stop) + 1]
    events = list(model.stream(p, max_tokens=10, temperature=0, stop=(stop,)))
    assert events[-1].finish_reason == "stop" and [e.token for e in events] == out


def test_rows_finish_independently(model):
    prompts = [ids(6, 6), ids(9, 7)]
    params = [SamplingParams(max_tokens=3, temperature=0), SamplingParams(max_tokens=9, temperature=0)]
    gen = BatchGenerator(model.transformer, prompts, params)
    events = list(gen)
    assert [len(g) for g in gen.generated] == [3, 9]
    assert sum(e.finish_reason == "length" for e in events) == 2
    assert gen.generated[1] == model.generate(prompts[1], max_tokens=9, temperature=0)
    assert all(e.logprob <= 0 for e in events)


def test_trimmed_vocabulary_decodes_over_kept_ids_with_full_vocabulary_results():
    """The bundled model (trimmed vocabulary): greedy tokens and log-probs equal those of the full 201,088-way
    logits, processors get full rows, and sampled tokens are kept ids."""
    from gptoss.models import default_model_path

    model = gptoss.load(default_model_path(), dtype="float32")
    vocab = model.transformer.vocab
    prompt = [200006, 17360, 200008, 3575, 553, 200007, 200006, 1428, 200008, 13225, 200007, 200006, 173781]
    seen = []

    def spy(tokens, logits):
        seen.append(logits.shape[-1])
        return logits

    gen = BatchGenerator(model.transformer, [prompt, prompt],
                         [SamplingParams(max_tokens=5, temperature=0), SamplingParams(max_tokens=12, temperature=1.3,
                                                                                      seed=5)],
                         logits_processors=[spy, None])
    events = list(gen)
    greedy = [e for e in events if e.row == 0]
    for k, ev in enumerate(greedy):
        full = model.logits(prompt + gen.generated[0][:k])[-1]
        assert ev.token == int(full.argmax())
        assert ev.logprob == pytest.approx(float(torch.log_softmax(full, -1)[ev.token]), abs=1e-4)
    assert set(seen) == {model.transformer.config.vocab_size}
    assert set(gen.generated[1]) <= set(vocab.kept.tolist())
