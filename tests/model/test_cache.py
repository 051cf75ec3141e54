"""KV caches: ring wraparound, growth, padding, mixed prefill/decode, trim."""

from __future__ import annotations

import pytest
import torch

from gptoss.model.cache import FullKVCache, SlidingKVCache


def kv(b: int, t: int, start: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    # Value = its absolute position, so fetched contents can be checked by eye.
    k = (torch.arange(t, dtype=torch.float32) + start).view(1, t, 1, 1).expand(b, t, 1, 2).clone()
    return k, -k


def test_full_cache_grows_and_returns_everything():
    c = FullKVCache(1, 1, 2, torch.float32, step=4)
    k, v = kv(1, 6)
    keys, values, pos = c.update_and_fetch(k, v, torch.arange(6)[None])
    assert c.capacity == 8 and pos.tolist() == [[0, 1, 2, 3, 4, 5]]
    k, v = kv(1, 1, 6)
    keys, values, pos = c.update_and_fetch(k, v, torch.tensor([[6]]))
    assert pos.tolist() == [[0, 1, 2, 3, 4, 5, 6]]
    assert keys[0, :, 0, 0].tolist() == list(range(7)) and torch.equal(values, -keys)
    assert int(c.offset[0]) == 7 and c.nbytes > 0


def test_sliding_cache_wraps_and_keeps_last_window():
    c = SlidingKVCache(1, 1, 2, window=4, dtype=torch.float32)
    k, v = kv(1, 6)
    keys, _, pos = c.update_and_fetch(k, v, torch.arange(6)[None])
    # A prefill longer than the ring sees all of its own keys ...
    assert sorted(p for p in pos[0].tolist() if p >= 0) == [0, 1, 2, 3, 4, 5]
    # ... and the ring keeps the newest 4 afterwards, in wrapped slots.
    k, v = kv(1, 1, 6)
    keys, _, pos = c.update_and_fetch(k, v, torch.tensor([[6]]))
    held = {p: float(x) for p, x in zip(pos[0].tolist(), keys[0, :, 0, 0].tolist(), strict=True) if p >= 0}
    # Decoding writes first and returns the ring itself (no copy): exactly the query's window.
    assert held == {3: 3.0, 4: 4.0, 5: 5.0, 6: 6.0}
    assert keys.data_ptr() == c.k.data_ptr() and pos.data_ptr() == c.pos.data_ptr()
    for step in range(7, 20):  # many wraparounds, decode only
        k, v = kv(1, 1, step)
        _, _, pos = c.update_and_fetch(k, v, torch.tensor([[step]]))
        assert sorted(p for p in pos[0].tolist() if p >= 0) == list(range(step - 3, step + 1))


def test_sliding_cache_in_place_only_when_no_needed_key_is_overwritten():
    """With spare capacity (max_trim), up to capacity - window + 1 new tokens are written in place;
    more take the copying path. Either way every query still sees its whole window."""
    c = SlidingKVCache(1, 1, 2, window=4, dtype=torch.float32, max_trim=2)  # capacity 6
    k, v = kv(1, 6)
    c.update_and_fetch(k, v, torch.arange(6)[None])
    k, v = kv(1, 3, 6)
    keys, _, pos = c.update_and_fetch(k, v, torch.tensor([[6, 7, 8]]))  # 3 = 6 - 4 + 1: in place
    assert keys.data_ptr() == c.k.data_ptr()
    assert sorted(p for p in pos[0].tolist() if p >= 0) == [3, 4, 5, 6, 7, 8]  # query 6 needs 3..6
    k, v = kv(1, 4, 9)
    keys, _, pos = c.update_and_fetch(k, v, torch.tensor([[9, 10, 11, 12]]))  # 4 > 3: copied
    assert keys.data_ptr() != c.k.data_ptr()
    assert set(range(6, 13)) <= {p for p in pos[0].tolist() if p >= 0}  # query 9 needs 6..9


def test_padding_is_never_cached():
    c = FullKVCache(2, 1, 2, torch.float32, step=8)
    k, v = kv(2, 3)
    pos = torch.tensor([[0, 1, 2], [0, -1, -1]])
    c.update_and_fetch(k, v, pos)
    assert c.offset.tolist() == [3, 1]
    k, v = kv(2, 1, 10)
    _, _, p = c.update_and_fetch(k, v, torch.tensor([[3], [1]]))
    assert [x for x in p[1].tolist() if x >= 0] == [0, 1]
    assert [x for x in p[0].tolist() if x >= 0] == [0, 1, 2, 3]


def test_trim_full_and_sliding():
    full = FullKVCache(1, 1, 2, torch.float32)
    k, v = kv(1, 10)
    full.update_and_fetch(k, v, torch.arange(10)[None])
    full.trim(3)
    k, v = kv(1, 1, 7)
    _, _, p = full.update_and_fetch(k, v, torch.tensor([[7]]))
    assert [x for x in p[0].tolist() if x >= 0] == list(range(8))

    ring = SlidingKVCache(1, 1, 2, window=4, dtype=torch.float32, max_trim=2)
    k, v = kv(1, 10)
    ring.update_and_fetch(k, v, torch.arange(10)[None])
    ring.trim(2)
    k, v = kv(1, 1, 8)
    _, _, p = ring.update_and_fetch(k, v, torch.tensor([[8]]))
    assert {5, 6, 7, 8} <= {x for x in p[0].tolist() if x >= 0}
    assert 9 not in p[0].tolist()
    with pytest.raises(ValueError):
        ring.trim(3)  # the keys position 6's window needs were overwritten
    ring.reset()
    assert int(ring.offset[0]) == 0 and bool((ring.pos < 0).all())
