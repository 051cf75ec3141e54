"""Plain-PyTorch compute kernels: the ground truth every faster backend is tested against.

They run on any device PyTorch supports. Softmax, norms and accumulations are done in float32
whatever the activation dtype (SPEC §1.6, pitfall 2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gptoss.weights.mxfp4 import dequantize_mxfp4

# An expert weight is either dense [E, out, in] or MXFP4-packed (blocks [E, out, G, 16], scales [E, out, G]).
ExpertWeight = torch.Tensor | tuple[torch.Tensor, torch.Tensor]
# A dense weight ``[out, in]``: floating point, or int8 rows with one float32 scale each (W = q * scale[:, None]).
LinearWeight = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


def rms_norm(x: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    """``x * rsqrt(mean(x^2) + eps) * scale`` in float32, cast back to x's dtype."""
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + eps)
    return (y * scale.float()).to(x.dtype)


def linear(x: torch.Tensor, weight: LinearWeight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ W.T + bias`` in x's dtype. An int8 weight is dequantized to float32 and the product
    taken in float32, then rounded to x's dtype (as the C kernel computes it)."""
    if isinstance(weight, tuple):
        q, scale = weight
        w = q.float() * scale.float()[:, None]
        return F.linear(x.float(), w, None if bias is None else bias.float()).to(x.dtype)
    return F.linear(x, weight, bias)


def rotary(x: torch.Tensor, heads: int, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Half-split rotary embedding of the first ``heads`` heads of ``x: (B, T, W)``; the rest of
    each row is unchanged. ``cos, sin: (B, T, D/2)`` float32; dim i pairs with i + D/2, math in
    float32, rounded to x's dtype. Other backends may rotate x in place and return it."""
    b, t, w = x.shape
    d = 2 * cos.shape[-1]
    x1, x2 = x[..., :heads * d].reshape(b, t, heads, d).float().chunk(2, dim=-1)
    c, s = cos[:, :, None], sin[:, :, None]
    rot = torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1).to(x.dtype).reshape(b, t, heads * d)
    return rot if heads * d == w else torch.cat([rot, x[..., heads * d:]], dim=-1)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    sinks: torch.Tensor,
    q_pos: torch.Tensor,
    k_pos: torch.Tensor,
    window: int | None,
    scale: float,
) -> torch.Tensor:
    """Grouped-query attention with learned sinks and an optional causal band.

    Args:
        q: ``(B, T, Hkv, G, D)``; query head ``h = kv * G + g`` reads kv head ``kv``.
        k, v: ``(B, S, Hkv, D)``.
        sinks: ``(Hkv * G,)`` one logit per query head; enlarges the softmax denominator only.
        q_pos: ``(B, T)`` absolute positions of the queries.
        k_pos: ``(B, S)`` absolute positions of the keys; ``-1`` marks an empty slot.
        window: if set, key j is visible to query i only when ``j > i - window``.
        scale: softmax scale applied to q.k (not to the sinks).

    Returns:
        ``(B, T, Hkv * G * D)`` in q's dtype.

    With gradients wanted it runs :func:`attention_sdpa` (same maths, far less memory traffic).
    """
    if torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v, sinks)):
        return attention_sdpa(q, k, v, sinks, q_pos, k_pos, window, scale)
    return attention_explicit(q, k, v, sinks, q_pos, k_pos, window, scale)


def attention_explicit(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    sinks: torch.Tensor,
    q_pos: torch.Tensor,
    k_pos: torch.Tensor,
    window: int | None,
    scale: float,
) -> torch.Tensor:
    """:func:`attention` written out: scores, mask, softmax with the sink column, weighted values."""
    b, t, hkv, g, d = q.shape
    scores = torch.einsum("bthgd,bshd->bhgts", q.float(), k.float()) * scale  # (B, Hkv, G, T, S)
    kp, qp = k_pos[:, None, :], q_pos[:, :, None]
    visible = (kp >= 0) & (kp <= qp)  # (B, T, S)
    if window is not None:
        visible &= kp > qp - window
    scores = scores.masked_fill(~visible[:, None, None], float("-inf"))
    sink = sinks.float().view(1, hkv, g, 1, 1).expand(b, hkv, g, t, 1)
    # The sink joins the max-stabilised softmax, then its column is dropped (rows may sum < 1).
    probs = torch.softmax(torch.cat([scores, sink], dim=-1), dim=-1)[..., :-1]
    out = torch.einsum("bhgts,bshd->bthgd", probs, v.float())  # (B, T, Hkv, G, D)
    return out.reshape(b, t, hkv * g * d).to(q.dtype)


def attention_sdpa(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    sinks: torch.Tensor,
    q_pos: torch.Tensor,
    k_pos: torch.Tensor,
    window: int | None,
    scale: float,
) -> torch.Tensor:
    """:func:`attention` through ``scaled_dot_product_attention``, for training.

    The explicit form keeps several ``(B, H, T, S)`` float32 tensors alive for autograd, which made
    attention ~80% of a training step. Here the sink becomes one extra key per head: queries get a
    constant extra dimension 1, that key is ``[0..0, sink / scale]`` with value 0, so its score is the
    sink logit and it only enlarges the denominator -- the same softmax, with gradients for the sinks.
    Values are padded to ``D + 1`` too: PyTorch's fused CPU kernel wants one head width.
    """
    b, t, hkv, g, d = q.shape
    s, h = k.shape[1], hkv * g
    qh = q.float().reshape(b, t, h, d).transpose(1, 2)  # (B, H, T, D)
    kh = k.float().transpose(1, 2).repeat_interleave(g, dim=1)  # (B, H, S, D)
    vh = v.float().transpose(1, 2).repeat_interleave(g, dim=1)
    qx = torch.cat([qh, qh.new_ones(b, h, t, 1)], dim=-1)
    sink_key = torch.cat([kh.new_zeros(h, d), (sinks.float() / scale)[:, None]], dim=-1)  # (H, D + 1)
    kx = torch.cat([torch.cat([kh, kh.new_zeros(b, h, s, 1)], dim=-1),
                    sink_key[None, :, None].expand(b, h, 1, d + 1)], dim=2)  # (B, H, S + 1, D + 1)
    vx = torch.nn.functional.pad(vh, (0, 1, 0, 1))  # a zero value for the sink; width D + 1 like q and k (flash)
    kp, qp = k_pos[:, None, :], q_pos[:, :, None]
    visible = (kp >= 0) & (kp <= qp)
    if window is not None:
        visible &= kp > qp - window
    visible = torch.cat([visible, visible.new_ones(b, t, 1)], dim=-1)[:, None]  # the sink is always visible
    out = F.scaled_dot_product_attention(qx, kx, vx, attn_mask=visible, scale=scale)  # (B, H, T, D)
    return out[..., :d].transpose(1, 2).reshape(b, t, h * d).to(q.dtype)


def expert_matrix(w: ExpertWeight, e: int, dtype: torch.dtype) -> torch.Tensor:
    """Expert e's ``[out, in]`` matrix, decoding MXFP4 on the fly if packed."""
    if isinstance(w, tuple):
        blocks, scales = w
        return dequantize_mxfp4(blocks[e], scales[e], dtype)
    return w[e].to(dtype)


def route(x: torch.Tensor, router_w: torch.Tensor, router_b: torch.Tensor, top_k: int
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Biased router logits -> top-k (sorted) -> softmax over only those k (SPEC §1.5)."""
    logits = F.linear(x, router_w, router_b)  # (N, E)
    top, idx = torch.topk(logits, top_k, dim=-1, sorted=True)  # (N, k)
    return torch.softmax(top.float(), dim=-1), idx


def swiglu(u: torch.Tensor, limit: float, alpha: float) -> torch.Tensor:
    """Clamped SwiGLU on interleaved channels: even = gate (clamped above), odd = linear (+1)."""
    gate, lin = u[..., ::2], u[..., 1::2]
    gate = gate.clamp(max=limit)
    lin = lin.clamp(min=-limit, max=limit)
    return gate * torch.sigmoid(alpha * gate) * (lin + 1)


def moe(
    x: torch.Tensor,
    router_w: torch.Tensor,
    router_b: torch.Tensor,
    w1: ExpertWeight,
    b1: torch.Tensor,
    w2: ExpertWeight,
    b2: torch.Tensor,
    top_k: int,
    limit: float,
    alpha: float,
) -> torch.Tensor:
    """Mixture of experts for ``x: (N, H)``; each selected expert is decoded once per call and
    applied to all tokens routed to it (batched dispatch)."""
    weights, idx = route(x, router_w, router_b, top_k)  # (N, k) fp32, (N, k)
    out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    for e in torch.unique(idx).tolist():
        rows, slot = (idx == e).nonzero(as_tuple=True)
        h = x[rows]  # (n, H)
        u = F.linear(h, expert_matrix(w1, e, x.dtype), b1[e])  # (n, 2I)
        # mlp2 bias is added per expert before the routing weight scales it (SPEC §1.5.4).
        y = F.linear(swiglu(u, limit, alpha), expert_matrix(w2, e, x.dtype), b2[e])  # (n, H)
        out.index_add_(0, rows, y.float() * weights[rows, slot, None])
    return out.to(x.dtype)


def kv_write(k_cache: torch.Tensor, v_cache: torch.Tensor, pos_cache: torch.Tensor, lengths: torch.Tensor,
             k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor, ring: bool) -> tuple[torch.Tensor, int]:
    """Append new tokens to a KV cache in place; returns ``(new_lengths, most)``.

    Caches ``k_cache, v_cache: (B, S + 1, Hkv, D)`` (the last slot is scratch, never read) and slot positions
    ``pos_cache: (B, S + 1)``; new ``k, v: (B, T, Hkv, D)`` at ``pos: (B, T)`` (``-1`` = padding, not written).
    Row b's valid tokens go to slots ``lengths[b]``, ``lengths[b] + 1``, ... -- modulo ``S`` for a ``ring``,
    which keeps only the newest ``S`` of them (older ones would collide). ``most`` is the largest new length;
    a growing cache (not ``ring``) that it does not fit is left untouched, for the caller to grow and call
    again."""
    cap = k_cache.shape[1] - 1
    valid = pos >= 0
    rank = valid.long().cumsum(1) - 1  # (B, T) index among the row's valid tokens
    n_new = valid.sum(1)
    new_lengths = lengths + n_new
    most = int(new_lengths.max()) if new_lengths.numel() else 0
    if not ring and most > cap:
        return new_lengths, most
    keep = valid & (rank >= (n_new - cap)[:, None]) if ring else valid
    index = lengths[:, None] + rank
    slots = (index % cap if ring else index).masked_fill(~keep, cap)  # padding and dropped -> scratch
    # index_copy_ on the flattened (row, slot) axis: scatter_ copies the whole cache on CPU. Duplicate
    # targets are scratch only.
    b, t = slots.shape
    flat = (slots + torch.arange(b, device=slots.device)[:, None] * k_cache.shape[1]).reshape(-1)
    k_cache.view(-1, *k_cache.shape[2:]).index_copy_(0, flat, k.reshape(b * t, *k.shape[2:]).to(k_cache.dtype))
    v_cache.view(-1, *v_cache.shape[2:]).index_copy_(0, flat, v.reshape(b * t, *v.shape[2:]).to(v_cache.dtype))
    pos_cache.view(-1).index_copy_(0, flat, pos.masked_fill(~keep, -1).reshape(-1))
    pos_cache[:, cap] = -1
    return new_lengths, most
