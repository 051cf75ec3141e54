"""The prefix cache: prompts that share whole leading messages reuse one computed state and decode exactly as
they would without it."""

from __future__ import annotations

import pytest
import torch

import gptoss
from gptoss.engine import SamplingParams
from gptoss.engine.continuous import ContinuousBatch, run_all
from gptoss.engine.prefix import END, PrefixCache, boundaries, common_prefix, repeat_rows
from gptoss.model.cache import make_cache


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return gptoss.load(tiny_checkpoint, dtype="float32")


def ids(n: int, seed: int) -> list[int]:
    return torch.randint(0, 199998, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


# A "system message" of 30 tokens and a "developer message" of 12, each ending in <|end|>; longer than the
# test model's sliding window (8), so ring caches are copied in a wrapped state.
SYSTEM = [*ids(29, 100), END]
DEVELOPER = [*ids(11, 101), END]


def test_boundaries_and_common_prefix():
    p = [5, END, 7, 8, END, 9]
    assert boundaries(p, len(p)) == [5, 2]
    assert boundaries(p, 4) == [2]
    assert boundaries(p, 1) == []
    assert common_prefix([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert common_prefix([[1, 2, 3]]) == 3
    assert common_prefix([[9], [1]]) == 0


def greedy(model, prompts, prefix_bytes: int, chunk: int = 64):
    batch = ContinuousBatch(model.transformer, prefill_chunk=chunk, prefix_cache_bytes=prefix_bytes)
    seqs = [batch.add(p, SamplingParams(max_tokens=6, temperature=0)) for p in prompts]
    run_all(batch)
    return batch, seqs


def test_shared_preamble_decodes_as_without_cache(model):
    prompts = [SYSTEM + ids(n, s) for n, s in ((5, 1), (9, 2), (3, 3))]
    plain, expected = greedy(model, prompts, 0)
    cached, got = greedy(model, prompts, 2**24)
    assert [s.generated for s in got] == [s.generated for s in expected]
    assert cached.prefixes is not None and len(cached.prefixes) == 1  # the preamble was stored, once
    assert [s.cached_tokens for s in got] == [0, 0, 0]  # a miss: computed now, not taken from the cache
    assert plain.prefixes is None
    # A preamble longer than one prefill chunk is not run as one forward: the group prefills as usual.
    chunked, got = greedy(model, prompts, 2**24, chunk=16)
    assert [s.generated for s in got] == [s.generated for s in expected]
    assert chunked.prefixes is not None and len(chunked.prefixes) == 0


def test_later_requests_reuse_the_stored_preamble(model):
    batch = ContinuousBatch(model.transformer, prefill_chunk=64)
    first = batch.add(SYSTEM + DEVELOPER + ids(7, 4), SamplingParams(max_tokens=5, temperature=0))
    run_all(batch)
    assert batch.prefixes is not None
    # The lone first prompt stored its whole-message prefixes: system, and system + developer.
    assert batch.prefixes.lookup(SYSTEM + DEVELOPER + [1, 2], 10**6)[0] == len(SYSTEM + DEVELOPER)
    assert batch.prefixes.lookup([*SYSTEM, 1, 2], 10**6)[0] == len(SYSTEM)
    # Joiners mid-decode: one shares system + developer, one only the system message.
    late = [SYSTEM + DEVELOPER + ids(4, 5), SYSTEM + ids(6, 6) + [END] + ids(3, 7)]
    runner = batch.add(ids(12, 8), SamplingParams(max_tokens=8, temperature=0))
    batch.advance()
    seqs = [batch.add(p, SamplingParams(max_tokens=6, temperature=0)) for p in late]
    run_all(batch)
    assert first.generated == model.generate(SYSTEM + DEVELOPER + ids(7, 4), max_tokens=5, temperature=0)
    assert runner.generated == model.generate(ids(12, 8), max_tokens=8, temperature=0)
    for seq, p in zip(seqs, late, strict=True):
        assert seq.generated == model.generate(p, max_tokens=6, temperature=0)
    # The two joiners share only the system message: taken from the cache for both.
    assert [s.cached_tokens for s in seqs] == [len(SYSTEM)] * 2
    again = batch.add(SYSTEM + DEVELOPER + ids(5, 9), SamplingParams(max_tokens=4, temperature=0))
    run_all(batch)
    assert again.cached_tokens == len(SYSTEM + DEVELOPER)
    assert again.generated == model.generate(SYSTEM + DEVELOPER + ids(5, 9), max_tokens=4, temperature=0)
    assert batch.prefixes.hits >= 1


def test_first_token_logits_match_recomputing(model):
    """The cached state gives the same next-token distribution as a full prefill (float tolerance)."""
    prompt = SYSTEM + DEVELOPER + ids(6, 10)
    batch = ContinuousBatch(model.transformer, prefill_chunk=64)
    batch.add(SYSTEM + DEVELOPER + ids(3, 11), SamplingParams(max_tokens=1, temperature=0))
    run_all(batch)
    seq = batch.add(prompt, SamplingParams(max_tokens=1, temperature=0))
    group, ran = batch._start_group([seq])  # what advance() does for a joining group, stopped before decode
    assert not ran and group.done_to == len(SYSTEM + DEVELOPER) and seq.cached_tokens == group.done_to
    batch._prefill_chunk(group)
    with torch.inference_mode():
        full = model.transformer(torch.tensor([prompt]), kept_logits=True)[0, -1]
    assert group.logits is not None
    torch.testing.assert_close(group.logits[0], full, atol=1e-4, rtol=1e-4)


def test_short_or_unshared_prompts_skip_the_cache(model):
    batch = ContinuousBatch(model.transformer)
    a = batch.add([*ids(5, 12), END, *ids(3, 13)], SamplingParams(max_tokens=3, temperature=0))  # preamble < 16
    run_all(batch)
    assert batch.prefixes is not None and len(batch.prefixes) == 0 and a.cached_tokens == 0
    # Prompts that are nothing but the preamble keep their last token to run: no entry covers a whole prompt.
    batch.add(SYSTEM, SamplingParams(max_tokens=2, temperature=0))
    run_all(batch)
    assert all(len(k) < len(SYSTEM) for k in batch.prefixes._entries)


def test_lru_eviction_by_bytes(model):
    cfg = model.transformer.config
    one = make_cache(cfg, 1, torch.float32)
    size = sum(c.nbytes for c in one)
    cache = PrefixCache(max_bytes=2 * size)
    cache.store([1, END], make_cache(cfg, 1, torch.float32))
    cache.store([2, END], make_cache(cfg, 1, torch.float32))
    assert cache.lookup([1, END, 5], 3)[0] == 2  # touch [1, END]: now the most recently used
    cache.store([3, END], make_cache(cfg, 1, torch.float32))
    assert len(cache) == 2 and cache.nbytes == 2 * size
    assert cache.lookup([2, END, 5], 3) == (0, None)  # the least recently used went
    assert cache.lookup([1, END, 5], 3)[0] == 2
    assert PrefixCache(max_bytes=size - 1).lookup([1, END], 2) == (0, None)
    tiny = PrefixCache(max_bytes=size - 1)
    tiny.store([1, END], one)  # larger than the whole budget: not kept
    assert len(tiny) == 0


def test_repeat_rows_copies_are_independent(model):
    cfg = model.transformer.config
    state = make_cache(cfg, 1, torch.float32)
    rows = repeat_rows(state, 3)
    rows[0].k.add_(1.0)
    assert float(state[0].k.abs().sum()) == 0.0 and rows[0].k.shape[0] == 3


def test_a_short_tail_is_fed_through_decode_steps(model):
    """A prompt whose un-cached tail is a few tokens joins the running batch at once (no prefill forward of its
    own), is fed one token per decode step, and decodes exactly as it would alone."""
    batch = ContinuousBatch(model.transformer, prefill_chunk=64)
    convo = [*SYSTEM, *DEVELOPER, *ids(5, 20), END]
    first = batch.add([*convo, 7, 8], SamplingParams(max_tokens=3, temperature=0))
    run_all(batch)  # stores system, system + developer and the whole conversation as preambles
    runner = batch.add(ids(10, 21), SamplingParams(max_tokens=12, temperature=0))
    batch.advance()
    forwards = len(batch.step_sizes)
    tail = [5, 6, 9]  # after the cached conversation: three tokens, fed by three decode steps
    late = batch.add(convo + tail, SamplingParams(max_tokens=5, temperature=0))
    batch.advance()
    assert batch.prefilling is None and late in batch.rows and late.pending == tail[1:]
    assert late.cached_tokens == len(convo) and late.generated == []
    assert len(batch.step_sizes) == forwards + 1 and batch.step_sizes[-1] == 2  # one forward: both rows
    run_all(batch)
    assert late.generated == model.generate(convo + tail, max_tokens=5, temperature=0)
    assert runner.generated == model.generate(ids(10, 21), max_tokens=12, temperature=0)
    assert first.generated == model.generate([*convo, 7, 8], max_tokens=3, temperature=0)
