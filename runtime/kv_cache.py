"""The key/value cache of one conversation: preallocated, owned by a session."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from corral.runtime.arch.ops import attend


class ContextFull(ValueError):
    """More tokens than the session's context window holds."""


class KVCache:
    """Keys and values of every layer for positions 0..length-1.

    Allocated once at the full context size with np.zeros, whose pages the OS
    commits only when written, so a large num_ctx costs memory only as it fills.
    """

    def __init__(self, n_layers: int, n_kv_heads: int, n_ctx: int, head_dim: int) -> None:
        self.n_ctx = n_ctx
        self.length = 0
        self.keys = np.zeros((n_layers, n_kv_heads, n_ctx, head_dim), dtype=np.float32)
        self.values = np.zeros_like(self.keys)  # (L, KV, C, D)

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


class BatchKV:
    """Attention for one new token in each of B sequences, each with its own cache.

    The projections around attention run batched over the B rows; attention
    itself runs per sequence, since each has its own length and keys.
    """

    def __init__(self, caches: Sequence[KVCache]) -> None:
        self.caches = caches
        self.positions = [c.length for c in caches]

    def attend(
        self, layer: int, q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float, window: int
    ) -> np.ndarray:
        """q (B, H, D), k and v (B, KV, D) -> (B, H*D)."""
        out = np.empty((q.shape[0], q.shape[1] * q.shape[2]), dtype=np.float32)
        for b, (cache, pos) in enumerate(zip(self.caches, self.positions, strict=True)):
            keys, values = cache.store(layer, pos, k[b : b + 1], v[b : b + 1])
            out[b] = attend(q[b : b + 1], keys, values, pos, scale, window)[0]
        return out
