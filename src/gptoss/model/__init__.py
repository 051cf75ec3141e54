"""The gpt-oss network and its KV caches."""

from gptoss.model.cache import FullKVCache, KVCache, SlidingKVCache, make_cache
from gptoss.model.transformer import Transformer, yarn_inv_freq

__all__ = ["FullKVCache", "KVCache", "SlidingKVCache", "Transformer", "make_cache", "yarn_inv_freq"]
