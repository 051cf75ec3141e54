"""A prefix cache: KV states of prompt prefixes that end at a harmony message boundary, reused by later prompts.

Requests to one server mostly start with the same system message (and often the same developer message:
instructions, tool definitions), so their first ~100 prompt tokens are identical. :class:`ContinuousBatch` runs
such a shared prefix once, for one row, keeps its per-layer cache state here, and starts every later prompt that
begins with it from a copy of that state instead of recomputing it.

Prefixes are cut only just after an ``<|end|>`` token (a whole message), so entries are few and a hit is a whole
system/developer preamble or a whole earlier conversation. Entries are evicted least recently used past a byte
budget. A state is the exact cache contents after those tokens (ring caches included), so reusing it gives the
same keys and values as recomputing them.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Sequence

from gptoss.model.cache import KVCache
from gptoss.tokenizer import SPECIAL_TOKENS

END = SPECIAL_TOKENS["<|end|>"]
DEFAULT_MAX_BYTES = 256 * 2**20
MIN_PREFIX = 16  # shorter shared prefixes are not worth a separate forward
MAX_CUTS = 4  # states stored per computed preamble: the first boundaries (system, developer, ...) and the last


def boundaries(prompt: Sequence[int], limit: int) -> list[int]:
    """Prefix lengths ``n <= limit`` that end just after an ``<|end|>`` token, longest first."""
    return [i + 1 for i in range(min(limit, len(prompt)) - 1, -1, -1) if prompt[i] == END]


def common_prefix(prompts: Sequence[Sequence[int]]) -> int:
    """Length of the longest prefix all ``prompts`` share."""
    first, n = prompts[0], min(len(p) for p in prompts)
    for p in prompts[1:]:
        k = 0
        while k < n and p[k] == first[k]:
            k += 1
        n = k
    return n


def repeat_rows(caches: Sequence[KVCache], rows: int) -> list[KVCache]:
    """Per-layer caches holding ``rows`` independent copies of the single row of ``caches``."""
    out = []
    for c in caches:
        n = copy.copy(c)
        n.k, n.v = c.k.repeat(rows, 1, 1, 1), c.v.repeat(rows, 1, 1, 1)
        n.pos, n.lengths = c.pos.repeat(rows, 1), c.lengths.repeat(rows)
        out.append(n)
    return out


def cache_nbytes(caches: Sequence[KVCache]) -> int:
    return sum(c.nbytes for c in caches)


class PrefixCache:
    """Single-row cache states keyed by the prompt prefix they hold (LRU, at most ``max_bytes``)."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[int, ...], list[KVCache]] = OrderedDict()
        self.nbytes = 0
        self.hits = 0  # lookups that found a stored prefix

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, prompt: Sequence[int], limit: int) -> tuple[int, list[KVCache] | None]:
        """The longest stored prefix of ``prompt[:limit]``: ``(length, state)``, or ``(0, None)``."""
        for n in boundaries(prompt, limit):
            state = self._entries.get(tuple(prompt[:n]))
            if state is not None:
                self._entries.move_to_end(tuple(prompt[:n]))
                self.hits += 1
                return n, state
        return 0, None

    def store(self, prefix: Sequence[int], state: list[KVCache]) -> None:
        """Keep ``state`` (one row holding exactly ``prefix``); the caller must not write to it again."""
        key = tuple(prefix)
        size = cache_nbytes(state)
        if size > self.max_bytes:
            return
        if key in self._entries:
            self.nbytes -= cache_nbytes(self._entries.pop(key))
        self._entries[key] = state
        self.nbytes += size
        while self.nbytes > self.max_bytes:
            _, old = self._entries.popitem(last=False)
            self.nbytes -= cache_nbytes(old)

    def clear(self) -> None:
        self._entries.clear()
        self.nbytes = 0
