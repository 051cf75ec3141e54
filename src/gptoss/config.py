"""Model configuration: one frozen dataclass read from a checkpoint's config.json.

Both spellings are accepted: OpenAI's ``original/config.json`` keys and the Hugging Face
``config.json`` keys (SPEC §1.1, pitfall 14). Shapes are never inferred from file names.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

# HF key -> native key. Only keys whose names differ are listed.
_HF_ALIASES = {
    "num_local_experts": "num_experts",
    "num_experts_per_tok": "experts_per_token",
}
# Keys of an HF config that we understand but do not need (they carry no shape information,
# or are training-only). Anything outside these sets is reported as unknown.
_HF_IGNORED = {
    "architectures", "model_type", "layer_types", "attention_bias", "attention_dropout",
    "hidden_act", "tie_word_embeddings", "eos_token_id", "pad_token_id", "bos_token_id",
    "router_aux_loss_coef", "output_router_logits", "initializer_range", "use_cache",
    "max_position_embeddings", "quantization_config", "torch_dtype", "dtype",
    "transformers_version", "rope_scaling", "rope_parameters", "_name_or_path",
}


class ConfigError(ValueError):
    """A config.json that cannot describe a gpt-oss model."""


@dataclass(frozen=True)
class ModelConfig:
    """gpt-oss hyper-parameters (defaults are gpt-oss-20b)."""

    num_hidden_layers: int = 24
    num_experts: int = 32
    experts_per_token: int = 4
    vocab_size: int = 201088
    hidden_size: int = 2880
    intermediate_size: int = 2880
    swiglu_limit: float = 7.0
    head_dim: int = 64
    num_attention_heads: int = 64
    num_key_value_heads: int = 8
    sliding_window: int = 128
    initial_context_length: int = 4096
    rope_theta: float = 150000.0
    rope_scaling_factor: float = 32.0
    rope_ntk_alpha: float = 1.0
    rope_ntk_beta: float = 32.0
    # Not in original/config.json; fixed by the architecture (SPEC §1.1).
    rms_norm_eps: float = 1e-5
    swiglu_alpha: float = 1.702
    # Trimmed vocabulary (small playground models only): token ids that keep their own
    # embedding/unembedding row, in row order. Other ids share one fallback embedding row and
    # are never sampled. None = every id has a row (all real checkpoints).
    kept_token_ids: tuple[int, ...] | None = None
    # Extra keys that were present but not understood (kept so `inspect` can report them).
    unknown_keys: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        problems = []
        for name in ("num_hidden_layers", "num_experts", "experts_per_token", "vocab_size",
                     "hidden_size", "intermediate_size", "head_dim", "num_attention_heads",
                     "num_key_value_heads", "sliding_window", "initial_context_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                problems.append(f"{name} must be a positive integer, got {value!r}")
        if problems:
            raise ConfigError("; ".join(problems))
        if self.num_attention_heads % self.num_key_value_heads:
            problems.append(f"num_attention_heads ({self.num_attention_heads}) must be a multiple "
                            f"of num_key_value_heads ({self.num_key_value_heads})")
        if self.experts_per_token > self.num_experts:
            problems.append(f"experts_per_token ({self.experts_per_token}) exceeds num_experts "
                            f"({self.num_experts})")
        if self.head_dim % 2:
            problems.append(f"head_dim ({self.head_dim}) must be even for RoPE")
        for name in ("hidden_size", "intermediate_size"):
            if getattr(self, name) % 32:
                problems.append(f"{name} ({getattr(self, name)}) must be a multiple of 32 (MXFP4 block)")
        if self.kept_token_ids is not None:
            ids = self.kept_token_ids
            if not ids or len(set(ids)) != len(ids) or min(ids) < 0 or max(ids) >= self.vocab_size:
                problems.append(f"kept_token_ids must be distinct ids in [0, {self.vocab_size})")
        if self.rope_theta <= 1 or self.rope_scaling_factor < 1:
            problems.append("rope_theta must be > 1 and rope_scaling_factor >= 1")
        if problems:
            raise ConfigError("; ".join(problems))

    # -- derived values -------------------------------------------------------------------
    @property
    def q_per_kv(self) -> int:
        return self.num_attention_heads // self.num_key_value_heads

    @property
    def embedding_rows(self) -> int:
        """Embedding rows: one per kept id plus the fallback row when the vocabulary is trimmed."""
        return self.vocab_size if self.kept_token_ids is None else len(self.kept_token_ids) + 1

    @property
    def unembedding_rows(self) -> int:
        return self.vocab_size if self.kept_token_ids is None else len(self.kept_token_ids)

    @property
    def qkv_dim(self) -> int:
        return self.head_dim * (self.num_attention_heads + 2 * self.num_key_value_heads)

    def is_sliding(self, layer: int) -> bool:
        """Even layers use the banded (sliding-window) attention (SPEC §1.3)."""
        return layer % 2 == 0

    # -- (de)serialisation ----------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Read either an original/config.json or an HF config.json; unknown keys are kept aside."""
        if not isinstance(d, dict):
            raise ConfigError(f"config must be a JSON object, got {type(d).__name__}")
        d = dict(d)
        native = {f.name for f in dataclasses.fields(cls)} - {"unknown_keys"}
        values: dict[str, Any] = {}
        rope = d.get("rope_scaling") or d.get("rope_parameters")
        if isinstance(rope, dict):
            if rope.get("rope_type", rope.get("type", "yarn")) != "yarn":
                raise ConfigError(f"rope_scaling.rope_type must be 'yarn', got {rope.get('rope_type')!r}")
            if rope.get("truncate", False):
                raise ConfigError("rope_scaling.truncate=true (rounded YaRN bounds) is not gpt-oss")
            mapping = {"factor": "rope_scaling_factor", "beta_slow": "rope_ntk_alpha",
                       "beta_fast": "rope_ntk_beta",
                       "original_max_position_embeddings": "initial_context_length",
                       "rope_theta": "rope_theta"}
            for k, v in mapping.items():
                if k in rope:
                    values[v] = rope[k]
        unknown = []
        for key, value in d.items():
            key_n = _HF_ALIASES.get(key, key)
            if key_n in native:
                values[key_n] = value
            elif key not in _HF_IGNORED:
                unknown.append(key)
        missing = [k for k in ("num_hidden_layers", "hidden_size", "vocab_size") if k not in values]
        if missing:
            raise ConfigError(f"config is missing required keys: {', '.join(missing)}")
        if "layer_types" in d:
            lt = d["layer_types"]
            expected = ["sliding_attention" if i % 2 == 0 else "full_attention"
                        for i in range(values["num_hidden_layers"])]
            if list(lt) != expected:
                raise ConfigError("layer_types must alternate sliding_attention/full_attention "
                                  "starting with sliding, one entry per layer")
        if values.get("kept_token_ids") is not None:
            try:
                values["kept_token_ids"] = tuple(int(i) for i in values["kept_token_ids"])
            except (TypeError, ValueError):
                raise ConfigError("kept_token_ids must be a list of token ids") from None
        for k in ("rope_theta", "rope_scaling_factor", "rope_ntk_alpha", "rope_ntk_beta",
                  "swiglu_limit", "rms_norm_eps", "swiglu_alpha"):
            if k in values:
                try:
                    values[k] = float(values[k])
                except (TypeError, ValueError):
                    raise ConfigError(f"{k} must be a number, got {values[k]!r}") from None
        return cls(**values, unknown_keys=tuple(sorted(unknown)))

    def to_original_dict(self) -> dict[str, Any]:
        """The 16 keys of OpenAI's original/config.json."""
        keys = ["num_hidden_layers", "num_experts", "experts_per_token", "vocab_size",
                "hidden_size", "intermediate_size", "swiglu_limit", "head_dim",
                "num_attention_heads", "num_key_value_heads", "sliding_window",
                "initial_context_length", "rope_theta", "rope_scaling_factor",
                "rope_ntk_alpha", "rope_ntk_beta"]
        out = {k: getattr(self, k) for k in keys}
        if self.kept_token_ids is not None:
            out["kept_token_ids"] = list(self.kept_token_ids)
        return out

    def to_hf_dict(self) -> dict[str, Any]:
        """A transformers-compatible config.json (SPEC §2.3: rope_scaling + top-level rope_theta,
        truncate false, max_position_embeddings = L0 * factor)."""
        n = self.num_hidden_layers
        if self.kept_token_ids is not None:
            raise ValueError("a trimmed-vocabulary model has no Hugging Face equivalent; use the original layout")
        return {
            "architectures": ["GptOssForCausalLM"],
            "model_type": "gpt_oss",
            "num_hidden_layers": n,
            "num_local_experts": self.num_experts,
            "num_experts_per_tok": self.experts_per_token,
            "experts_per_token": self.experts_per_token,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "swiglu_limit": self.swiglu_limit,
            "head_dim": self.head_dim,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "sliding_window": self.sliding_window,
            "layer_types": ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n)],
            "initial_context_length": self.initial_context_length,
            "max_position_embeddings": int(self.initial_context_length * self.rope_scaling_factor),
            "rope_theta": self.rope_theta,
            "rope_scaling": {
                "rope_type": "yarn", "factor": self.rope_scaling_factor,
                "beta_fast": self.rope_ntk_beta, "beta_slow": self.rope_ntk_alpha,
                "original_max_position_embeddings": self.initial_context_length,
                "truncate": False,
            },
            "attention_bias": True,
            "attention_dropout": 0.0,
            "rms_norm_eps": self.rms_norm_eps,
            "hidden_act": "silu",
            "tie_word_embeddings": False,
            "eos_token_id": 200002 if self.vocab_size > 200002 else None,
            "pad_token_id": 199999 if self.vocab_size > 199999 else None,
            "router_aux_loss_coef": 0.9,
            "initializer_range": 0.02,
            "use_cache": True,
            "quantization_config": {
                "quant_method": "mxfp4",
                "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                           "model.embed_tokens", "lm_head"],
            },
        }

    # -- size accounting (SPEC §1.7) ------------------------------------------------------
    def param_counts(self) -> dict[str, int]:
        h, i, e, n = self.hidden_size, self.intermediate_size, self.num_experts, self.num_hidden_layers
        q = self.num_attention_heads * self.head_dim
        attn = h + self.qkv_dim * h + self.qkv_dim + self.num_attention_heads + q * h + h
        expert = 2 * i * h + 2 * i + h * i + h
        router = e * h + e
        moe = h + router + e * expert
        emb, unemb = self.embedding_rows * h, self.unembedding_rows * h
        total = n * (attn + moe) + emb + unemb + h
        active = n * (attn + h + router + self.experts_per_token * expert) + unemb + h
        return {"total": total, "attention": n * attn, "moe": n * moe, "embedding": emb,
                "unembedding": unemb, "active_per_token": active}

    def weight_bytes(self) -> dict[str, int]:
        """Bytes as stored: MXFP4 experts (17 bytes per 32 weights), everything else BF16."""
        c = self.param_counts()
        h, i, e, n = self.hidden_size, self.intermediate_size, self.num_experts, self.num_hidden_layers
        mx_per_expert = (2 * i * h + h * i) // 32 * 17
        expert_weights = 3 * i * h
        dense = c["total"] - n * e * expert_weights
        per_expert_bytes = mx_per_expert + 2 * (2 * i + h)
        return {
            "total": dense * 2 + n * e * mx_per_expert,
            "experts_mxfp4": n * e * mx_per_expert,
            "dense_bf16": dense * 2,
            # Bytes read to decode one token: all attention + router + top-k experts + one
            # embedding row + the unembedding.
            "read_per_token": n * (2 * (c["attention"] // n + h + e * h + e)
                                   + self.experts_per_token * per_expert_bytes)
            + 2 * h + 2 * c["unembedding"] + 2 * h,
        }


PRESETS: dict[str, ModelConfig] = {
    "20b": ModelConfig(),
    "120b": ModelConfig(num_hidden_layers=36, num_experts=128),
    # Tiny but faithful: H != I catches an mlp2 transpose, L0 > 2*pi*beta_fast keeps YaRN valid,
    # a window of 8 is exercised by short sequences. Vocab keeps the harmony special ids valid.
    "tiny": ModelConfig(num_hidden_layers=4, num_experts=8, experts_per_token=4, vocab_size=201088,
                        hidden_size=64, intermediate_size=96, head_dim=16, num_attention_heads=8,
                        num_key_value_heads=2, sliding_window=8, initial_context_length=256),
}


def preset(name: str, **overrides: Any) -> ModelConfig:
    """A named preset (`20b`, `120b`, `tiny`), optionally with fields replaced."""
    name = name.removeprefix("gpt-oss-")
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)


def yarn_bounds(cfg: ModelConfig) -> tuple[float, float]:
    """Unrounded YaRN correction range (SPEC §1.4)."""
    d, b, l0 = cfg.head_dim, cfg.rope_theta, cfg.initial_context_length
    low = d / 2 * math.log(l0 / (cfg.rope_ntk_beta * 2 * math.pi)) / math.log(b)
    high = d / 2 * math.log(l0 / (cfg.rope_ntk_alpha * 2 * math.pi)) / math.log(b)
    return low, high
