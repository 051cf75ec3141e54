"""The gpt-oss network in plain PyTorch: one readable file.

Parameter names follow OpenAI's ``original/`` checkpoint, so loading is a loop of copies
(SPEC §2.2). Compute-heavy pieces go through :mod:`gptoss.ops`; no loading, generation or
training code lives here.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gptoss import ops
from gptoss.config import ModelConfig
from gptoss.model.cache import KVCache


class Int8Linear(nn.Module):
    """A linear layer whose weight is stored as int8 rows with one float32 scale per output row
    (``W ~ weight_q * weight_scale[:, None]``); see :func:`gptoss.weights.quantize.quantize_linear`.
    Inference only: the 8-bit option for the non-expert weights."""

    def __init__(self, weight_q: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("weight_q", weight_q)
        self.register_buffer("weight_scale", weight_scale)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self.out_features, self.in_features = weight_q.shape

    def op_weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.weight_q, self.weight_scale


def linear(layer: nn.Linear | Int8Linear, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` through :func:`gptoss.ops.linear` (the backend's dense kernel)."""
    weight = layer.op_weight() if isinstance(layer, Int8Linear) else layer.weight
    return ops.linear(x, weight, layer.bias)


class RMSNorm(nn.Module):
    """``x * rsqrt(mean(x^2) + eps) * scale`` in float32; scale only, no bias, not ``1 + scale``."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(dim, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.rms_norm(x, self.scale, self.eps)


def yarn_inv_freq(cfg: ModelConfig) -> tuple[torch.Tensor, float]:
    """YaRN frequencies with unrounded bounds, and the concentration applied to cos and sin.

    Dims below ``low`` keep their frequency, dims above ``high`` are divided by the scaling
    factor, the ones between are blended linearly (SPEC §1.4, pitfall 5).
    """
    d, f = cfg.head_dim, cfg.rope_scaling_factor
    freq = cfg.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)  # (D/2,)
    concentration = 0.1 * math.log(f) + 1.0
    if f <= 1.0:
        return (1.0 / freq).float(), 1.0
    low = d / 2 * math.log(cfg.initial_context_length / (cfg.rope_ntk_beta * 2 * math.pi)) / math.log(cfg.rope_theta)
    high = d / 2 * math.log(cfg.initial_context_length / (cfg.rope_ntk_alpha * 2 * math.pi)) / math.log(cfg.rope_theta)
    assert 0 < low < high < d / 2 - 1, f"{low=} {high=}"
    extrapolation = 1.0 / freq
    interpolation = 1.0 / (f * freq)
    ramp = (torch.arange(d // 2, dtype=torch.float64) - low) / (high - low)
    mask = 1 - ramp.clamp(0, 1)
    inv_freq = interpolation * (1 - mask) + extrapolation * mask
    return inv_freq.float(), concentration


class RotaryEmbedding(nn.Module):
    """Half-split ("NeoX") rotary embedding: dim i pairs with dim i + D/2, at absolute positions."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        inv_freq, self.concentration = yarn_inv_freq(cfg)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def table(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``cos, sin: (B, T, D/2)`` float32 for ``positions: (B, T)`` (negative = padding, treated
        as 0), concentration applied. Every layer rotates by the same positions, so the last
        table is kept and reused while ``positions`` is the same tensor."""
        memo = getattr(self, "_memo", None)
        if memo is not None and memo[0] is positions:
            return memo[1], memo[2]
        angles = positions.clamp(min=0).float()[..., None] * self.inv_freq  # (B, T, D/2)
        cos, sin = angles.cos() * self.concentration, angles.sin() * self.concentration
        self._memo = (positions, cos, sin)
        return cos, sin

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rotate ``x: (B, T, ..., D)`` by ``positions: (B, T)`` (negative = padding, treated as 0)."""
        cos, sin = self.table(positions)
        heads = math.prod(x.shape[2:-1])
        out = ops.rotary(x.reshape(*x.shape[:2], heads * x.shape[-1]), heads, cos, sin)
        return out.view(x.shape)


class AttentionBlock(nn.Module):
    """RMSNorm -> fused qkv (with bias) -> RoPE -> GQA with learned sinks -> out projection.

    Query head h reads kv head h // q_per_kv (kv-major order); even layers see only the last
    ``sliding_window`` keys, the current one included (SPEC §1.3, pitfalls 1-3).
    """

    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.window = cfg.sliding_window if cfg.is_sliding(layer) else None
        q_dim = cfg.num_attention_heads * cfg.head_dim
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.qkv = nn.Linear(cfg.hidden_size, cfg.qkv_dim, bias=True)
        self.sinks = nn.Parameter(torch.zeros(cfg.num_attention_heads, dtype=torch.float32))
        self.out = nn.Linear(q_dim, cfg.hidden_size, bias=True)
        self.scale = 1.0 / math.sqrt(cfg.head_dim)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, rope: RotaryEmbedding,
                cache: KVCache | None) -> torch.Tensor:
        cfg = self.cfg
        b, t, _ = x.shape
        n_kv, d, g = cfg.num_key_value_heads, cfg.head_dim, cfg.q_per_kv
        qkv = linear(self.qkv, self.norm(x))  # (B, T, qkv_dim)
        q_end = cfg.num_attention_heads * d
        cos, sin = rope.table(positions)
        qkv = ops.rotary(qkv, cfg.num_attention_heads + n_kv, cos, sin)  # q and k heads lead each row
        q = qkv[..., :q_end].view(b, t, n_kv, g, d)  # (B, T, Hkv, G, D)
        k = qkv[..., q_end:q_end + n_kv * d].view(b, t, n_kv, d)  # (B, T, Hkv, D)
        v = qkv[..., q_end + n_kv * d:].view(b, t, n_kv, d)  # (B, T, Hkv, D)
        if cache is not None:
            k, v, k_pos = cache.update_and_fetch(k, v, positions)  # (B, S, Hkv, D), (B, S)
        else:
            k_pos = positions
        o = ops.attention(q, k, v, self.sinks, positions, k_pos, self.window, self.scale)  # (B, T, H*D)
        return x + linear(self.out, o)


class MXFP4Weight(nn.Module):
    """A packed expert weight ``[E, out, in]``: ``blocks [E, out, in/32, 16]`` and ``scales [E, out, in/32]``.

    Stays packed in memory; :mod:`gptoss.ops` decodes only the experts the router selects.
    """

    def __init__(self, experts: int, out_features: int, in_features: int) -> None:
        super().__init__()
        g = in_features // 32
        self.register_buffer("blocks", torch.zeros(experts, out_features, g, 16, dtype=torch.uint8))
        self.register_buffer("scales", torch.zeros(experts, out_features, g, dtype=torch.uint8))

    def packed(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.blocks, self.scales

    def op_weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.packed()


class DenseExpertWeight(nn.Module):
    """A floating-point expert weight ``[E, out, in]``: what training needs (gradients want
    floats). :func:`gptoss.train.experts.dequantize_experts` swaps it in for MXFP4Weight."""

    def __init__(self, weight: torch.Tensor, fake_quant: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.fake_quant = fake_quant  # train through MXFP4 rounding (straight-through estimator)

    def op_weight(self) -> torch.Tensor:
        if not self.fake_quant:
            return self.weight
        from gptoss.weights.mxfp4 import dequantize_mxfp4, quantize_mxfp4

        q = dequantize_mxfp4(*quantize_mxfp4(self.weight), self.weight.dtype)
        return self.weight + (q - self.weight).detach()


class MLPBlock(nn.Module):
    """RMSNorm -> biased router -> top-k then softmax -> clamped interleaved SwiGLU experts.

    mlp1 rows interleave gate (even) and linear (odd); the gate is clamped above at
    ``swiglu_limit``, the linear part to +-limit and shifted by +1; mlp2's bias is added per
    expert before the routing weight (SPEC §1.5, pitfalls 6-8).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        e, h, i = cfg.num_experts, cfg.hidden_size, cfg.intermediate_size
        self.norm = RMSNorm(h, cfg.rms_norm_eps)
        self.gate = nn.Linear(h, e, bias=True)
        self.mlp1_weight = MXFP4Weight(e, 2 * i, h)
        self.mlp1_bias = nn.Parameter(torch.zeros(e, 2 * i))
        self.mlp2_weight = MXFP4Weight(e, h, i)
        self.mlp2_bias = nn.Parameter(torch.zeros(e, h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        shape = x.shape
        h = self.norm(x).reshape(-1, shape[-1])  # (B*T, H)
        y = ops.moe(h, self.gate.weight, self.gate.bias, self.mlp1_weight.op_weight(), self.mlp1_bias,
                    self.mlp2_weight.op_weight(), self.mlp2_bias, cfg.experts_per_token,
                    cfg.swiglu_limit, cfg.swiglu_alpha)  # (B*T, H)
        return x + y.view(shape)


class TransformerBlock(nn.Module):
    """Pre-norm residual block: ``x + attn(norm(x))`` then ``x + moe(norm(x))``."""

    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.attn = AttentionBlock(cfg, layer)
        self.mlp = MLPBlock(cfg)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, rope: RotaryEmbedding,
                cache: KVCache | None) -> torch.Tensor:
        return self.mlp(self.attn(x, positions, rope, cache))


class TrimmedVocab(nn.Module):
    """Id <-> row maps for a trimmed vocabulary (playground models). Ids without a row embed
    as the fallback row and get -inf logits, so they are never sampled."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        kept = torch.tensor(cfg.kept_token_ids, dtype=torch.long)
        to_row = torch.full((cfg.vocab_size,), len(kept), dtype=torch.long)  # fallback row
        to_row[kept] = torch.arange(len(kept))
        self.register_buffer("to_row", to_row, persistent=False)
        self.register_buffer("kept", kept, persistent=False)
        self.vocab_size = cfg.vocab_size

    def rows(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.to_row[tokens]

    def expand(self, logits: torch.Tensor) -> torch.Tensor:
        """Row logits ``(..., kept)`` -> full-vocabulary logits ``(..., V)``."""
        full = logits.new_full((*logits.shape[:-1], self.vocab_size), float("-inf"))
        full[..., self.kept] = logits
        return full

    def process(self, processor, tokens, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A logits processor (written for full-vocabulary rows) on one kept-row logits row: ``(kept-row logits,
        None)``, or ``(kept-row logits, full row)`` when the processor left no kept id but some other id
        sampleable (a grammar may allow only a spelling the model was not trained on): then the token must be
        drawn from that full row."""
        full = processor(tokens, self.expand(logits))
        kept = full[..., self.kept]
        if bool(torch.isfinite(kept).any()) or not bool(torch.isfinite(full).any()):
            return kept, None
        return kept, full


class Transformer(nn.Module):
    """Embedding -> blocks -> RMSNorm -> untied unembedding (no bias, no scaling, no soft-cap)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embedding = nn.Embedding(cfg.embedding_rows, cfg.hidden_size)
        self.block = nn.ModuleList(TransformerBlock(cfg, n) for n in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.unembedding = nn.Linear(cfg.hidden_size, cfg.unembedding_rows, bias=False)
        self.rope = RotaryEmbedding(cfg)
        self.vocab = TrimmedVocab(cfg) if cfg.kept_token_ids is not None else None

    def forward(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor | None = None,
        cache: list[KVCache] | None = None,
        logit_index: torch.Tensor | None = None,
        return_hidden: bool = False,
        kept_logits: bool = False,
    ) -> torch.Tensor:
        """Run the network.

        Args:
            tokens: ``(B, T)`` token ids.
            positions: ``(B, T)`` absolute positions; ``-1`` marks padding (never attended to,
                never cached). Defaults to ``0..T-1`` for every row.
            cache: one cache per layer (see :func:`gptoss.model.cache.make_cache`), or None.
            logit_index: ``(B,)`` the one position per row whose logits are wanted; all
                positions when None.
            return_hidden: return the final-normed hidden states instead of logits (training
                unembeds only the positions it scores, in chunks).
            kept_logits: with a trimmed vocabulary, return logits over the kept rows only
                (``vocab.kept[i]`` is the id of column ``i``); samplers then work on ~3k columns,
                not 201,088. Ignored for a full vocabulary.

        Returns:
            float32 logits ``(B, T, V)``, or ``(B, V)`` with ``logit_index``.
        """
        b, t = tokens.shape
        if positions is None:
            positions = torch.arange(t, device=tokens.device).expand(b, t)
        if cache is not None:
            assert len(cache) == len(self.block), f"{len(cache)=} {len(self.block)=}"
        x = self.embedding(tokens if self.vocab is None else self.vocab.rows(tokens))  # (B, T, H)
        for n, block in enumerate(self.block):
            x = block(x, positions, self.rope, None if cache is None else cache[n])
        if logit_index is not None:
            x = x[torch.arange(b, device=x.device), logit_index]  # (B, H)
        if return_hidden:
            return self.norm(x)
        logits = linear(self.unembedding, self.norm(x)).float()
        return logits if self.vocab is None or kept_logits else self.vocab.expand(logits)
