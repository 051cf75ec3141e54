"""The Python API returned by :func:`gptoss.load`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from gptoss.config import ModelConfig
from gptoss.engine.generate import DEFAULT_PREFILL_CHUNK, BatchGenerator, TokenEvent, check_tokens
from gptoss.engine.sampling import SamplingParams
from gptoss.model.cache import make_cache
from gptoss.model.transformer import Transformer
from gptoss.weights.checkpoint import Checkpoint
from gptoss.weights.loader import load_transformer


class Model:
    """A loaded gpt-oss model: logits and token generation."""

    def __init__(self, transformer: Transformer, checkpoint: Checkpoint | None = None) -> None:
        self.transformer = transformer
        self.checkpoint = checkpoint

    @classmethod
    def load(cls, path: str | Path, dtype: str | torch.dtype = "bfloat16",
             device: str | torch.device = "cpu", quantize: str = "none") -> Model:
        """Load a checkpoint. ``quantize="int8"`` stores the attention projections and the
        unembedding as int8 rows with float32 scales (CPU; see :mod:`gptoss.weights.quantize`)."""
        from gptoss.weights.quantize import quantize_transformer

        model, ckpt = load_transformer(path, dtype, device)
        return cls(quantize_transformer(model, quantize), ckpt)

    @property
    def config(self) -> ModelConfig:
        return self.transformer.config

    @property
    def device(self) -> torch.device:
        return self.transformer.embedding.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.embedding.weight.dtype

    @torch.inference_mode()
    def logits(self, token_ids: Sequence[int], chunk: int = DEFAULT_PREFILL_CHUNK) -> torch.Tensor:
        """float32 logits ``[T, vocab]`` for every position (cached, in chunks of ``chunk``)."""
        ids = torch.tensor(check_tokens(token_ids, self.config.vocab_size), device=self.device)
        cache = make_cache(self.config, 1, self.dtype, self.device)
        outs = []
        for c0 in range(0, len(ids), chunk):
            part = ids[c0:c0 + chunk][None]
            pos = torch.arange(c0, c0 + part.shape[1], device=self.device)[None]
            outs.append(self.transformer(part, pos, cache)[0])
        return torch.cat(outs)

    def stream(self, token_ids: Sequence[int], **kwargs: object) -> Iterator[TokenEvent]:
        """Yield each sampled token as a :class:`TokenEvent` (arguments as :meth:`generate`)."""
        yield from BatchGenerator(self.transformer, [token_ids], SamplingParams(**kwargs))  # type: ignore[arg-type]

    def generate(self, token_ids: Sequence[int], max_tokens: int = 256, temperature: float = 1.0,
                 top_p: float = 1.0, top_k: int = 0, seed: int | None = None,
                 stop: Sequence[int] = ()) -> list[int]:
        """Sampled continuation of ``token_ids`` (greedy when ``temperature == 0``).

        Stops after ``max_tokens`` or on a token in ``stop``; that stop token ends the list.
        """
        return self.generate_batch([token_ids], max_tokens=max_tokens, temperature=temperature,
                                   top_p=top_p, top_k=top_k, seed=seed, stop=stop)[0]

    def generate_batch(self, prompts: Sequence[Sequence[int]], max_tokens: int = 256,
                       temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
                       seed: int | None = None, stop: Sequence[int] = ()) -> list[list[int]]:
        """Several prompts decoded together in shared forward passes (same params for each)."""
        params = SamplingParams(max_tokens, temperature, top_p, top_k, seed, tuple(stop))
        gen = BatchGenerator(self.transformer, prompts, params)
        for _ in gen:
            pass
        return gen.generated
