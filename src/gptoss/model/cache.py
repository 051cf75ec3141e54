"""Explicit per-layer KV caches, passed into ``Transformer.forward``.

Both classes hold a batch of rows, each with its own length, and record the absolute position
of every slot (``-1`` = empty) so attention masks are built from positions, never from slot
order. Tokens with position ``-1`` (padding, finished rows) are never written.

- :class:`FullKVCache` grows in steps of ``step`` slots (full-attention layers).
- :class:`SlidingKVCache` is a ring of ``capacity >= window`` slots (banded layers).
"""

from __future__ import annotations

import torch

from gptoss import ops
from gptoss.config import ModelConfig


class _RowCache:
    """State and bookkeeping shared by both caches."""

    def __init__(self, batch: int, n_kv: int, head_dim: int, capacity: int,
                 dtype: torch.dtype, device: torch.device | str) -> None:
        # One extra slot at the end absorbs writes of padding tokens and is never read.
        self.k = torch.zeros(batch, capacity + 1, n_kv, head_dim, dtype=dtype, device=device)
        self.v = torch.zeros_like(self.k)
        self.pos = torch.full((batch, capacity + 1), -1, dtype=torch.long, device=device)
        self.lengths = torch.zeros(batch, dtype=torch.long, device=device)

    @property
    def capacity(self) -> int:
        return self.k.shape[1] - 1

    @property
    def offset(self) -> torch.Tensor:
        """Tokens written so far, per row ``(B,)``."""
        return self.lengths

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes + self.pos.nbytes

    def reset(self) -> None:
        self.pos.fill_(-1)
        self.lengths.zero_()

    def _append(self, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor, ring: bool) -> int:
        """Write the valid tokens through :func:`gptoss.ops.kv_write`; returns the longest row's new length
        (a growing cache is not written, nor its lengths changed, when that exceeds its capacity)."""
        new_lengths, most = ops.kv_write(self.k, self.v, self.pos, self.lengths, k, v, pos, ring)
        if ring or most <= self.capacity:
            self.lengths = new_lengths
        return most


class FullKVCache(_RowCache):
    """Growing cache: slot = token index within the row."""

    def __init__(self, batch: int, n_kv: int, head_dim: int, dtype: torch.dtype,
                 device: torch.device | str = "cpu", step: int = 256) -> None:
        super().__init__(batch, n_kv, head_dim, step, dtype, device)
        self.step = step

    def _grow(self, needed: int) -> None:
        new_cap = -(-needed // self.step) * self.step
        b, _, n_kv, d = self.k.shape
        pad = new_cap - self.capacity
        self.k = torch.cat([self.k[:, :-1], self.k.new_zeros(b, pad + 1, n_kv, d)], dim=1)
        self.v = torch.cat([self.v[:, :-1], self.v.new_zeros(b, pad + 1, n_kv, d)], dim=1)
        self.pos = torch.cat([self.pos[:, :-1], self.pos.new_full((b, pad + 1), -1)], dim=1)

    def update_and_fetch(self, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Store new ``k, v: (B, T, Hkv, D)`` at ``pos: (B, T)``; return every cached key."""
        used = self._append(k, v, pos, ring=False)
        if used > self.capacity:
            self._grow(used)
            self._append(k, v, pos, ring=False)
        return self.k[:, :used], self.v[:, :used], self.pos[:, :used]

    def trim(self, n: int) -> None:
        """Forget the last ``n`` tokens of every row."""
        if n < 0 or n > int(self.lengths.min()):
            raise ValueError(f"cannot trim {n} tokens from rows of lengths {self.lengths.tolist()}")
        ar = torch.arange(self.capacity + 1, device=self.pos.device)
        self.pos[ar[None, :] >= (self.lengths - n)[:, None]] = -1
        self.lengths = self.lengths - n


class SlidingKVCache(_RowCache):
    """Ring buffer for banded layers: keeps the last ``capacity`` tokens of each row.

    ``capacity = window + max_trim`` so that up to ``max_trim`` tokens can be trimmed without
    losing a key some later query still needs.
    """

    def __init__(self, batch: int, n_kv: int, head_dim: int, window: int, dtype: torch.dtype,
                 device: torch.device | str = "cpu", max_trim: int = 0) -> None:
        super().__init__(batch, n_kv, head_dim, window + max_trim, dtype, device)
        self.window = window

    def update_and_fetch(self, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return the cached keys followed by the new ones (a prefill longer than the ring still
        sees all of its own keys), then keep only the newest ``capacity`` tokens."""
        cap = self.capacity
        if k.shape[1] <= cap - self.window + 1:
            # Few new tokens (decoding): the keys they overwrite are older than every new query's
            # window, so write first and attend over the ring itself, in slot order, without a copy.
            self._append(k, v, pos, ring=True)
            return self.k[:, :cap], self.v[:, :cap], self.pos[:, :cap]
        keys = torch.cat([self.k[:, :cap], k.to(self.k.dtype)], dim=1)
        values = torch.cat([self.v[:, :cap], v.to(self.v.dtype)], dim=1)
        positions = torch.cat([self.pos[:, :cap], pos.masked_fill(pos < 0, -1)], dim=1)
        self._append(k, v, pos, ring=True)  # only the newest `capacity` tokens of each row stay in the ring
        return keys, values, positions

    def trim(self, n: int) -> None:
        """Forget the last ``n`` tokens; only possible while the ring still holds the keys the
        new last token's window needs."""
        lengths = self.lengths
        held = torch.where(self.pos >= 0, self.pos, torch.iinfo(torch.long).max)
        oldest_kept = torch.minimum(held.amin(1), lengths)
        # The next query (position lengths - n) needs keys back to lengths - n - (window - 1).
        needed_from = torch.clamp(lengths - n - (self.window - 1), min=0)
        if n < 0 or n > int(lengths.min()) or bool((needed_from < oldest_kept).any()):
            raise ValueError(f"cannot trim {n} tokens from a sliding cache of capacity "
                             f"{self.capacity} (window {self.window})")
        cutoff = (lengths - n)[:, None]
        self.pos[(self.pos >= 0) & (self.pos >= cutoff)] = -1
        self.lengths = lengths - n


KVCache = FullKVCache | SlidingKVCache


def make_cache(cfg: ModelConfig, batch: int, dtype: torch.dtype, device: torch.device | str = "cpu",
               max_trim: int = 0) -> list[KVCache]:
    """One cache per layer: a ring on banded (even) layers, a growing cache on full ones."""
    return [
        SlidingKVCache(batch, cfg.num_key_value_heads, cfg.head_dim, cfg.sliding_window, dtype,
                       device, max_trim)
        if cfg.is_sliding(i)
        else FullKVCache(batch, cfg.num_key_value_heads, cfg.head_dim, dtype, device)
        for i in range(cfg.num_hidden_layers)
    ]
