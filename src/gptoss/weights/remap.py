"""Hugging Face <-> native (OpenAI ``original/``) tensor names (SPEC §2.3).

One table drives both directions. HF splits the fused qkv projection into q/k/v; those map to
the native ``qkv`` tensor with a part tag that the loader concatenates in q, k, v order.
"""

from __future__ import annotations

import re

# (HF pattern, native template, part) -- {n} is the layer index.
_RULES: list[tuple[str, str, str | None]] = [
    ("model.embed_tokens.weight", "embedding.weight", None),
    ("model.norm.weight", "norm.scale", None),
    ("lm_head.weight", "unembedding.weight", None),
    ("model.layers.{n}.input_layernorm.weight", "block.{n}.attn.norm.scale", None),
    ("model.layers.{n}.self_attn.q_proj.weight", "block.{n}.attn.qkv.weight", "q"),
    ("model.layers.{n}.self_attn.k_proj.weight", "block.{n}.attn.qkv.weight", "k"),
    ("model.layers.{n}.self_attn.v_proj.weight", "block.{n}.attn.qkv.weight", "v"),
    ("model.layers.{n}.self_attn.q_proj.bias", "block.{n}.attn.qkv.bias", "q"),
    ("model.layers.{n}.self_attn.k_proj.bias", "block.{n}.attn.qkv.bias", "k"),
    ("model.layers.{n}.self_attn.v_proj.bias", "block.{n}.attn.qkv.bias", "v"),
    ("model.layers.{n}.self_attn.o_proj.weight", "block.{n}.attn.out.weight", None),
    ("model.layers.{n}.self_attn.o_proj.bias", "block.{n}.attn.out.bias", None),
    ("model.layers.{n}.self_attn.sinks", "block.{n}.attn.sinks", None),
    ("model.layers.{n}.post_attention_layernorm.weight", "block.{n}.mlp.norm.scale", None),
    ("model.layers.{n}.mlp.router.weight", "block.{n}.mlp.gate.weight", None),
    ("model.layers.{n}.mlp.router.bias", "block.{n}.mlp.gate.bias", None),
    ("model.layers.{n}.mlp.experts.gate_up_proj_blocks", "block.{n}.mlp.mlp1_weight.blocks", None),
    ("model.layers.{n}.mlp.experts.gate_up_proj_scales", "block.{n}.mlp.mlp1_weight.scales", None),
    ("model.layers.{n}.mlp.experts.gate_up_proj_bias", "block.{n}.mlp.mlp1_bias", None),
    ("model.layers.{n}.mlp.experts.down_proj_blocks", "block.{n}.mlp.mlp2_weight.blocks", None),
    ("model.layers.{n}.mlp.experts.down_proj_scales", "block.{n}.mlp.mlp2_weight.scales", None),
    ("model.layers.{n}.mlp.experts.down_proj_bias", "block.{n}.mlp.mlp2_bias", None),
]


def _compile(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.escape(template).replace(r"\{n\}", r"(?P<n>\d+)") + "$")


_HF_TO_NATIVE = [(_compile(hf), native, part) for hf, native, part in _RULES]
QKV_PARTS = ("q", "k", "v")


def remap_hf_to_native(name: str) -> tuple[str, str | None] | None:
    """HF tensor name -> (native name, qkv part or None); None if the name is not gpt-oss."""
    for pattern, native, part in _HF_TO_NATIVE:
        m = pattern.match(name)
        if m:
            return native.format(n=m.group("n")) if "n" in m.groupdict() else native, part
    return None


def native_to_hf(name: str) -> list[tuple[str, str | None]]:
    """Native name -> the HF name(s) it is stored under (three for the fused qkv tensors)."""
    out = []
    for hf, native, part in _RULES:
        m = _compile(native).match(name)
        if m:
            out.append((hf.format(n=m.group("n")) if "n" in m.groupdict() else hf, part))
    return out


def looks_dequantized(name: str) -> bool:
    """A transformers re-save of a dequantised model stores float ``gate_up_proj``/``down_proj``."""
    return bool(re.search(r"\.mlp\.experts\.(gate_up_proj|down_proj)$", name))
