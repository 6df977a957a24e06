"""The key/value cache of one conversation: preallocated, owned by a session."""

from __future__ import annotations

import numpy as np


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
