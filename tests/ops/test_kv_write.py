"""ops.kv_write: the C kernel writes exactly what the reference writes (padding skipped, rings wrapped, only
the newest tokens of a long chunk kept in a ring, a growing cache left untouched when it lacks room)."""

from __future__ import annotations

import pytest
import torch

from gptoss.ops import cpu, reference

needs_kernel = pytest.mark.skipif(not cpu.available(), reason="the CPU kernel does not build here")


def caches(b: int, cap: int, dtype: torch.dtype, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    k = torch.randn(b, cap + 1, 2, 8, generator=gen).to(dtype)
    pos = torch.randint(-1, 50, (b, cap + 1), generator=gen)
    pos[:, cap] = -1
    return k, k.clone() * 2, pos


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("b", "t", "cap", "ring"), [(1, 1, 8, False), (3, 1, 8, True), (4, 5, 16, False),
                                                     (2, 7, 6, True), (3, 20, 6, True), (2, 3, 4, False)])
def test_kernel_equals_reference(dtype: torch.dtype, b: int, t: int, cap: int, ring: bool) -> None:
    gen = torch.Generator().manual_seed(b * 100 + t * 10 + cap)
    k_cache, v_cache, pos_cache = caches(b, cap, dtype, gen)
    lengths = torch.randint(0, cap + 3 if ring else 3, (b,), generator=gen)
    qkv = torch.randn(b, t, 40, generator=gen).to(dtype)  # k, v as views into a fused projection, like the model
    k, v = qkv[..., 8:24].view(b, t, 2, 8), qkv[..., 24:].view(b, t, 2, 8)
    pos = lengths[:, None] + torch.arange(t)
    pos[0, -1] = -1  # padding at the end of row 0
    if b > 1:
        pos[1] = -1  # a finished row
    want = [x.clone() for x in (k_cache, v_cache, pos_cache)]
    want_len, want_most = reference.kv_write(*want, lengths, k, v, pos, ring)
    got = [x.clone() for x in (k_cache, v_cache, pos_cache)]
    got_len, got_most = cpu.kv_write(*got, lengths, k, v, pos, ring)
    assert got_most == want_most and torch.equal(got_len, want_len)
    for g, w in zip(got, want, strict=True):
        assert torch.equal(g[:, :cap], w[:, :cap])  # the scratch slot (padding lands there) is never read
    assert torch.equal(got[2], want[2])
    if not ring and want_most > cap:  # no room: nothing written, for the caller to grow the cache
        assert all(torch.equal(g, x) for g, x in zip(got, (k_cache, v_cache, pos_cache), strict=True))


def test_reference_ring_keeps_the_newest() -> None:
    k_cache, v_cache, pos_cache = (torch.zeros(1, 5, 1, 1), torch.zeros(1, 5, 1, 1), torch.full((1, 5), -1))
    new = torch.arange(6.0).view(1, 6, 1, 1)
    lengths, most = reference.kv_write(k_cache, v_cache, pos_cache, torch.tensor([1]), new, new,
                                       torch.arange(1, 7)[None], ring=True)
    assert most == 7 and lengths.tolist() == [7]
    # tokens 3..6 (values 2..5) survive in slots 3, 0, 1, 2; the scratch slot stays unread
    assert pos_cache.tolist() == [[4, 5, 6, 3, -1]] and k_cache.flatten()[:4].tolist() == [3.0, 4.0, 5.0, 2.0]
