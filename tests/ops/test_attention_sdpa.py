"""The training attention (SDPA with the sink as an extra key) equals the explicit reference, values and gradients."""

import pytest
import torch

from gptoss.ops import reference


def _inputs(b: int, t: int, s: int, hkv: int, g: int, d: int, seed: int, holes: bool):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(b, t, hkv, g, d, generator=gen)
    k = torch.randn(b, s, hkv, d, generator=gen)
    v = torch.randn(b, s, hkv, d, generator=gen)
    sinks = torch.randn(hkv * g, generator=gen) * 2
    q_pos = torch.arange(s - t, s).expand(b, t).clone()
    k_pos = torch.arange(s).expand(b, s).clone()
    if holes:  # empty cache slots
        k_pos[0, : s // 3] = -1
    return [q, k, v, sinks], q_pos, k_pos


@pytest.mark.parametrize(("b", "t", "s", "hkv", "g", "d", "window", "holes"), [
    (2, 9, 9, 2, 4, 8, None, False),
    (3, 17, 17, 1, 3, 5, 4, False),
    (1, 5, 12, 2, 2, 16, 6, True),
    (2, 33, 33, 2, 1, 7, 1, False),  # window 1: each query sees itself and the sink only
])
def test_sdpa_matches_explicit_forward_and_backward(b, t, s, hkv, g, d, window, holes) -> None:
    tensors, q_pos, k_pos = _inputs(b, t, s, hkv, g, d, seed=t * 31 + s, holes=holes)
    scale = d ** -0.5
    results = []
    for fn in (reference.attention_explicit, reference.attention_sdpa):
        leaves = [x.clone().requires_grad_(True) for x in tensors]
        out = fn(*leaves, q_pos, k_pos, window, scale)
        weight = torch.linspace(-1, 1, out.numel()).reshape(out.shape)
        (out * weight).sum().backward()
        results.append([out.detach(), *(x.grad for x in leaves)])
    for name, got, want in zip(("out", "dq", "dk", "dv", "dsinks"), results[1], results[0], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5, msg=name)


def test_attention_dispatches_to_sdpa_only_when_gradients_are_needed(monkeypatch) -> None:
    tensors, q_pos, k_pos = _inputs(1, 4, 4, 1, 2, 4, seed=0, holes=False)
    called = []
    real = reference.attention_sdpa
    monkeypatch.setattr(reference, "attention_sdpa", lambda *a: called.append(1) or real(*a))
    reference.attention(*tensors, q_pos, k_pos, None, 0.5)
    assert not called
    reference.attention(tensors[0].requires_grad_(True), *tensors[1:], q_pos, k_pos, None, 0.5)
    assert called
