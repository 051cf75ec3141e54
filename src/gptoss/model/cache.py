"""Explicit per-layer KV caches, passed into ``Transformer.forward``.

Both classes hold a batch of rows, each with its own length, and record the absolute position
of every slot (``-1`` = empty) so attention masks are built from positions, never from slot
order. Tokens with position ``-1`` (padding, finished rows) are never written.

- :class:`FullKVCache` grows in steps of ``step`` slots (full-attention layers).
- :class:`SlidingKVCache` is a ring of ``capacity >= window`` slots (banded layers).
"""

from __future__ import annotations

import torch

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

    def _write(self, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor, index: torch.Tensor,
               keep: torch.Tensor) -> None:
        """Scatter tokens whose ``keep`` is true into ``slot(index)``; the rest go to scratch."""
        slots = self.slot(index).masked_fill(~keep, self.capacity)  # (B, T)
        # index_copy_ on the flattened (row, slot) axis: scatter_ copies the whole cache on CPU
        # (milliseconds per layer at a few thousand slots). Duplicate targets are scratch only.
        b, t = slots.shape
        flat = (slots + torch.arange(b, device=slots.device)[:, None] * self.k.shape[1]).reshape(-1)
        self.k.view(-1, *self.k.shape[2:]).index_copy_(0, flat, k.reshape(b * t, *k.shape[2:]).to(self.k.dtype))
        self.v.view(-1, *self.v.shape[2:]).index_copy_(0, flat, v.reshape(b * t, *v.shape[2:]).to(self.v.dtype))
        self.pos.view(-1).index_copy_(0, flat, pos.masked_fill(~keep, -1).reshape(-1))
        self.pos[:, self.capacity] = -1

    def slot(self, index: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _one(self, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor) -> int | None:
        """Decoding one row: the index of the single new token, or None to take the general path.
        The general path costs a dozen small tensor ops per layer and token."""
        if pos.shape != (1, 1) or self.k.shape[0] != 1:
            return None
        p = int(pos)
        return int(self.lengths[0]) if p >= 0 else None

    def _rows(self, k: torch.Tensor, pos: torch.Tensor) -> bool:
        """Decoding several rows, one real token each: the path :meth:`_put_rows` takes (a third of the
        general path's small tensor ops)."""
        return pos.shape == (self.k.shape[0], 1) and bool((pos >= 0).all())

    def _put_rows(self, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor) -> None:
        """Write each row's one new token at its slot ``slots (B,)``."""
        b, stride = self.k.shape[0], self.k.shape[1]
        base = getattr(self, "_base", None)
        if base is None or base.shape[0] != b or base[-1] != (b - 1) * stride:  # row starts in the flat slot axis
            base = self._base = torch.arange(b, device=slots.device) * stride
        flat = slots + base
        self.k.view(-1, *self.k.shape[2:]).index_copy_(0, flat, k[:, 0].to(self.k.dtype))
        self.v.view(-1, *self.v.shape[2:]).index_copy_(0, flat, v[:, 0].to(self.v.dtype))
        self.pos.view(-1).index_copy_(0, flat, pos[:, 0])
        self.lengths = self.lengths + 1

    def _put(self, slot: int, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor) -> None:
        self.k[0, slot] = k[0, 0]
        self.v[0, slot] = v[0, 0]
        self.pos[0, slot] = pos[0, 0]
        self.lengths = self.lengths + 1


class FullKVCache(_RowCache):
    """Growing cache: slot = token index within the row."""

    def __init__(self, batch: int, n_kv: int, head_dim: int, dtype: torch.dtype,
                 device: torch.device | str = "cpu", step: int = 256) -> None:
        super().__init__(batch, n_kv, head_dim, step, dtype, device)
        self.step = step

    def slot(self, index: torch.Tensor) -> torch.Tensor:
        return index

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
        i = self._one(k, v, pos)
        if i is not None:
            if i + 1 > self.capacity:
                self._grow(i + 1)
            self._put(i, k, v, pos)
            return self.k[:, :i + 1], self.v[:, :i + 1], self.pos[:, :i + 1]
        if self._rows(k, pos):
            used = int(self.lengths.max()) + 1
            if used > self.capacity:
                self._grow(used)
            self._put_rows(self.lengths, k, v, pos)
            return self.k[:, :used], self.v[:, :used], self.pos[:, :used]
        valid = pos >= 0
        index = self.lengths[:, None] + valid.long().cumsum(1) - 1  # (B, T)
        new_len = self.lengths + valid.sum(1)
        used = int(new_len.max())
        if used > self.capacity:
            self._grow(used)
        self._write(k, v, pos, index, valid)
        self.lengths = new_len
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

    def slot(self, index: torch.Tensor) -> torch.Tensor:
        return index % self.capacity

    def update_and_fetch(self, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return the cached keys followed by the new ones (a prefill longer than the ring still
        sees all of its own keys), then keep only the newest ``capacity`` tokens."""
        cap = self.capacity
        i = self._one(k, v, pos) if cap >= self.window else None
        if i is not None:  # one token: written first, then the ring is its whole window (below)
            self._put(i % cap, k, v, pos)
            return self.k[:, :cap], self.v[:, :cap], self.pos[:, :cap]
        if cap >= self.window and self._rows(k, pos):  # one token per row: as above, for every row
            self._put_rows(self.lengths % cap, k, v, pos)
            return self.k[:, :cap], self.v[:, :cap], self.pos[:, :cap]
        if k.shape[1] <= cap - self.window + 1:
            # Few new tokens (decoding): the keys they overwrite are older than every new query's
            # window, so write first and attend over the ring itself, in slot order, without a copy.
            valid = pos >= 0
            index = self.lengths[:, None] + valid.long().cumsum(1) - 1
            self._write(k, v, pos, index, valid)
            self.lengths = self.lengths + valid.sum(1)
            return self.k[:, :cap], self.v[:, :cap], self.pos[:, :cap]
        keys = torch.cat([self.k[:, :cap], k.to(self.k.dtype)], dim=1)
        values = torch.cat([self.v[:, :cap], v.to(self.v.dtype)], dim=1)
        positions = torch.cat([self.pos[:, :cap], pos.masked_fill(pos < 0, -1)], dim=1)
        valid = pos >= 0
        rank = valid.long().cumsum(1) - 1  # (B, T) index among this call's valid tokens
        n_new = valid.sum(1, keepdim=True)
        keep = valid & (rank >= n_new - cap)  # older ones would collide in the ring
        self._write(k, v, pos, self.lengths[:, None] + rank, keep)
        self.lengths = self.lengths + n_new.squeeze(1)
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
