"""The key/value cache of one conversation: preallocated, owned by a session.

Caches that will decode together can share one pool (`KVPool`): each is a slot
of one array, so a batched step attends for all of them in a few array calls
instead of a loop over sequences.
"""

from __future__ import annotations

import math
import mmap
from collections.abc import Sequence

import numpy as np

from corral.runtime.arch.ops import attend, softmax_inplace
from corral.runtime.pages import mapped_array


def kv_array(shape: tuple[int, ...]) -> np.ndarray:
    """A zeroed float32 array for keys or values, whose pages the OS commits only when
    written, and which forked children do not inherit (MADV_DONTFORK): a helper forked
    later (runtime/split.py) would otherwise keep the old copy of every page this
    process writes after the fork."""
    if not math.prod(shape) or not hasattr(mmap, "MADV_DONTFORK"):
        return np.zeros(shape, dtype=np.float32)
    return mapped_array(shape, mmap.MADV_DONTFORK)


class ContextFull(ValueError):
    """More tokens than the session's context window holds."""


class KVCache:
    """Keys and values of every layer for positions 0..length-1.

    Allocated once at the full context size (`kv_array`), whose pages the OS commits
    only when written, so a large num_ctx costs memory only as it fills.
    """

    def __init__(
        self,
        n_layers: int,
        n_kv_heads: int,
        n_ctx: int,
        head_dim: int,
        pool: KVPool | None = None,
        slot: int = 0,
    ) -> None:
        self.n_ctx = n_ctx
        self.length = 0
        self.pool, self.slot = pool, slot
        if pool is None:
            self.keys = kv_array((n_layers, n_kv_heads, n_ctx, head_dim))  # (L, KV, C, D)
            self.values = kv_array(self.keys.shape)
        else:
            self.keys, self.values = pool.keys[:, slot], pool.values[:, slot]  # (L, KV, C, D)

    def store(
        self, layer: int, pos: int, k: np.ndarray, v: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Write k, v (T, KV, D) at pos..pos+T-1; return the layer's (KV, pos+T, D) views."""
        end = pos + k.shape[0]
        if end > self.n_ctx:
            raise ContextFull(f"context window of {self.n_ctx} tokens is full")
        self.keys[layer, :, pos:end] = k.transpose(1, 0, 2)
        self.values[layer, :, pos:end] = v.transpose(1, 0, 2)
        return self.keys[layer, :, :end], self.values[layer, :, :end]

    def truncate(self, length: int) -> None:
        """Forget positions from `length` on (their slots are overwritten later)."""
        self.length = min(self.length, length)


class SequenceKV:
    """Attention for T consecutive tokens of one sequence, after its cache's length."""

    def __init__(self, cache: KVCache) -> None:
        self.cache = cache
        self.pos = cache.length

    def attend(
        self, layer: int, q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float, window: int
    ) -> np.ndarray:
        """q (T, H, D), k and v (T, KV, D) -> (T, H*D); stores k and v in the cache."""
        keys, values = self.cache.store(layer, self.pos, k, v)  # (KV, pos+T, D) each
        return attend(q, keys, values, self.pos, scale, window)


class KVPool:
    """The caches of up to `n_slots` sequences in one array each for keys and values.

    Each cache refers to its pool, never the other way round: with no reference cycle,
    the pool's memory goes back the moment its last cache is dropped, not at the next
    cyclic garbage collection (which may be long in coming in a daemon)."""

    def __init__(
        self, n_layers: int, n_kv_heads: int, n_ctx: int, head_dim: int, n_slots: int
    ) -> None:
        shape = (n_layers, n_slots, n_kv_heads, n_ctx, head_dim)  # (L, P, KV, C, D)
        self.keys = kv_array(shape)
        self.values = kv_array(shape)

    def new_caches(self) -> list[KVCache]:
        """One cache per slot (call once: two caches of one slot would overwrite each other)."""
        n_layers, n_slots, n_kv_heads, n_ctx, head_dim = self.keys.shape
        return [
            KVCache(n_layers, n_kv_heads, n_ctx, head_dim, self, slot) for slot in range(n_slots)
        ]


class BatchKV:
    """Attention for one new token in each of B sequences, each with its own cache.

    The projections around attention run batched over the B rows. Attention runs
    over all B at once when their caches share a pool (`PooledAttention`), and
    per sequence otherwise, since each has its own length and keys.
    """

    def __init__(self, caches: Sequence[KVCache]) -> None:
        self.caches = caches
        self.positions = [c.length for c in caches]
        pool = caches[0].pool
        self.pooled = (
            PooledAttention(pool, caches)
            if pool is not None and len(caches) > 1 and all(c.pool is pool for c in caches)
            else None
        )

    def attend(
        self, layer: int, q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float, window: int
    ) -> np.ndarray:
        """q (B, H, D), k and v (B, KV, D) -> (B, H*D)."""
        if self.pooled is not None:
            return self.pooled.attend(layer, q, k, v, scale, window)
        out = np.empty((q.shape[0], q.shape[1] * q.shape[2]), dtype=np.float32)
        for b, (cache, pos) in enumerate(zip(self.caches, self.positions, strict=True)):
            keys, values = cache.store(layer, pos, k[b : b + 1], v[b : b + 1])
            out[b] = attend(q[b : b + 1], keys, values, pos, scale, window)[0]
        return out


class SegmentKV:
    """Attention for a step that runs several sequences' new tokens at once: segment b
    is counts[b] consecutive tokens after caches[b]'s length (one for a decoding
    sequence, a chunk of its prompt for a prefilling one), its rows following those of
    segment b-1. The one-token segments attend together (`BatchKV`), longer ones each
    on its own (`SequenceKV`)."""

    def __init__(self, caches: Sequence[KVCache], counts: Sequence[int]) -> None:
        starts = np.cumsum([0, *counts[:-1]])  # each segment's first row: (B,)
        singles = [b for b, n in enumerate(counts) if n == 1]
        self.single_rows = starts[singles]  # (S,)
        self.singles = BatchKV([caches[b] for b in singles]) if singles else None
        self.runs = [
            (slice(int(starts[b]), int(starts[b]) + n), SequenceKV(caches[b]))
            for b, n in enumerate(counts)
            if n > 1
        ]

    def attend(
        self, layer: int, q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float, window: int
    ) -> np.ndarray:
        """q (N, H, D), k and v (N, KV, D) for all segments' rows -> (N, H*D)."""
        out = np.empty((q.shape[0], q.shape[1] * q.shape[2]), dtype=np.float32)  # (N, H*D)
        if self.singles is not None:
            rows = self.single_rows
            out[rows] = self.singles.attend(layer, q[rows], k[rows], v[rows], scale, window)
        for rows, sequence in self.runs:
            out[rows] = sequence.attend(layer, q[rows], k[rows], v[rows], scale, window)
        return out


class PooledAttention:
    """One new token for each of B caches of one pool, attended in one go.

    Works on the pool's slots lo..hi-1 that span the B caches (their keys are a
    view, never a copy); slots in that span which are not in the batch are
    computed on dummy input and dropped.
    """

    def __init__(self, pool: KVPool, caches: Sequence[KVCache]) -> None:
        self.pool = pool
        self.slots = np.array([c.slot for c in caches])  # (B,)
        self.lo, hi = int(self.slots.min()), int(self.slots.max()) + 1
        self.rows = self.slots - self.lo  # each cache's row in the span: (B,)
        # the usual batch: every slot of the span, in order (no rows to scatter or gather)
        self.whole_span = bool(np.array_equal(self.rows, np.arange(hi - self.lo)))
        positions = np.zeros(hi - self.lo, dtype=np.int64)  # (P,): 0 for slots not batched
        positions[self.rows] = [c.length for c in caches]
        self.positions = positions
        self.at = positions[self.rows]  # each cache's new position: (B,)
        self.n_keys = int(positions.max()) + 1  # S: keys up to the longest sequence
        if self.n_keys > caches[0].n_ctx:
            raise ContextFull(f"context window of {caches[0].n_ctx} tokens is full")
        self.behind = positions[:, None] - np.arange(self.n_keys)[None, :]  # (P, S)
        self._masks: dict[int, np.ndarray] = {}

    def mask(self, window: int) -> np.ndarray:
        """(P, 1, 1, S) float32: -inf on the keys a row must not see, 0 elsewhere."""
        if window not in self._masks:
            hidden = self.behind < 0
            if window:
                hidden |= self.behind >= window
            bias = np.where(hidden, np.float32(-np.inf), np.float32(0))
            self._masks[window] = bias[:, None, None, :]
        return self._masks[window]

    def attend(
        self, layer: int, q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float, window: int
    ) -> np.ndarray:
        """q (B, H, D), k and v (B, KV, D) -> (B, H*D); stores k and v in each slot."""
        pool, span = self.pool, slice(self.lo, self.lo + len(self.positions))
        pool.keys[layer, self.slots, :, self.at] = k  # (B, KV, D), each at its position
        pool.values[layer, self.slots, :, self.at] = v
        keys = pool.keys[layer, span, :, : self.n_keys]  # (P, KV, S, D)
        values = pool.values[layer, span, :, : self.n_keys]
        n_rows, n_heads, d = len(self.positions), q.shape[1], q.shape[2]
        n_kv = keys.shape[1]
        if self.whole_span:
            qs = q * np.float32(scale)  # (P, H, D)
        else:
            qs = np.zeros((n_rows, n_heads, d), dtype=np.float32)  # (P, H, D)
            qs[self.rows] = q * np.float32(scale)
        qs = qs.reshape(n_rows, n_kv, n_heads // n_kv, d)  # (P, KV, G, D)
        scores = qs @ keys.transpose(0, 1, 3, 2)  # (P, KV, G, S)
        scores += self.mask(window)
        out = (softmax_inplace(scores) @ values).reshape(n_rows, n_heads * d)  # (P, H*D)
        return out if self.whole_span else out[self.rows]  # (B, H*D)


# What a forward pass attends through: one sequence's tokens, one token each of several
# sequences, or segments of several sequences.
Attention = SequenceKV | BatchKV | SegmentKV
