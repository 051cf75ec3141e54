"""Generation: KV-cached prefill/decode, batching and sampling."""

from gptoss.engine.generate import BatchGenerator, TokenEvent, generate_batch
from gptoss.engine.sampling import SamplingParams, make_sampler

__all__ = ["BatchGenerator", "SamplingParams", "TokenEvent", "generate_batch", "make_sampler"]
