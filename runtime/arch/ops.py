"""The NumPy building blocks the architectures share: norms, activations, RoPE, attention.

All float32; shapes are noted as (T, H, D) = (tokens, heads, head dim), d = model width.
"""

from __future__ import annotations

import math

import numpy as np

from corral.runtime import bf16
from corral.runtime.bf16 import Bf16Matrix

# A weight matrix (out, in): float32, or bfloat16 (a quantized file's, runtime/bf16.py)
Matrix = np.ndarray | Bf16Matrix

# e^(i * position * frequency) for each (T, 1, D/2) pair of a head's dims; 1 past rope_dim
Rotation = np.ndarray

_GELU_C = np.float32(math.sqrt(2.0 / math.pi))
_GELU_A = np.float32(0.044715)


# Rows of x for which `linear` streams each weight block once through L2 for every row
# (2..6): OpenBLAS's sgemm packs the whole matrix per call, which costs as much as one
# matrix-vector product per row at these sizes. One row is a matrix-vector product,
# more rows a plain GEMM. (Splitting the rows of each weight between our own threads
# instead loses here: every product then waits for a thread to wake, ~95 us per round
# trip on these virtual machines, against OpenBLAS's spinning pool.)
BLOCKED_ROWS = range(2, 7)
BLOCK_BYTES = 2 << 20  # a weight block that fits in L2 (4 MiB per core on these machines)


def linear(x: np.ndarray, weight: Matrix) -> np.ndarray:
    """x (N, in) @ weight.T for weight (out, in): (N, out)."""
    if isinstance(weight, Bf16Matrix):
        return bf16.linear(x, weight)
    if x.shape[0] not in BLOCKED_ROWS:
        return x @ weight.T
    rows = max(1, BLOCK_BYTES // (weight.shape[1] * weight.itemsize))
    out = np.empty((x.shape[0], weight.shape[0]), dtype=np.float32)
    for start in range(0, weight.shape[0], rows):
        block = weight[start : start + rows]  # (rows, in), contiguous
        for n in range(x.shape[0]):
            np.matmul(block, x[n], out=out[n, start : start + rows])
    return out


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """Normalise the last axis: x (..., n), weight (n,) -> (..., n)."""
    rms = np.square(x).sum(axis=-1, keepdims=True)  # (..., 1)
    rms *= np.float32(1.0 / x.shape[-1])
    rms += np.float32(eps)
    np.sqrt(rms, out=rms)
    return x / rms * weight


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """GELU, tanh approximation (PyTorch's approximate="tanh", ggml's gelu)."""
    inner = _GELU_C * (x + _GELU_A * x * x * x)
    return np.float32(0.5) * x * (np.float32(1.0) + np.tanh(inner))


def softmax_inplace(x: np.ndarray) -> np.ndarray:
    x -= x.max(axis=-1, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=-1, keepdims=True)
    return x


# ----- RoPE ----------------------------------------------------------------


def rotation(inv_freq: np.ndarray, positions: np.ndarray, head_dim: int) -> Rotation:
    """The RoPE rotation of each of `positions` (T,): one row per token, so the rows of
    a batch may sit at different positions. (T, 1, head_dim/2) complex64; the pairs past
    rope_dim = 2 * len(inv_freq) turn by angle 0 and pass through unrotated."""
    angles = np.zeros((positions.shape[0], head_dim // 2))  # (T, D/2) float64
    angles[:, : inv_freq.shape[0]] = np.outer(positions.astype(np.float64), inv_freq)
    rot = np.empty(angles.shape, dtype=np.complex64)
    rot.real, rot.imag = np.cos(angles), np.sin(angles)
    return rot[:, None, :]


def rope(x: np.ndarray, rot: Rotation) -> np.ndarray:
    """Rotary position embedding of x (T, H, D), whose dims (2i, 2i+1) rotate together
    (llama's layout; NeoX's halves are reordered into pairs at load): each pair is one
    complex number, multiplied by its rotation. One array operation, 4-10x faster than
    rotating halves with cos and sin."""
    if x.strides[-1] != x.itemsize:
        x = np.ascontiguousarray(x)
    return (x.view(np.complex64) * rot).view(np.float32)  # (T, H, D)


# ----- attention -----------------------------------------------------------


def attention_mask(t: int, s: int, first: int, window: int) -> np.ndarray:
    """(T, S) True where query row r (at index first + r of the keys' axis) must not see
    key column c: c is in its future, or (window > 0) `window` or more positions back."""
    behind = (first + np.arange(t))[:, None] - np.arange(s)[None, :]  # (T, S)
    masked = behind < 0
    if window:
        masked |= behind >= window
    return masked


def attend(
    q: np.ndarray,
    keys: np.ndarray,
    values: np.ndarray,
    pos: int,
    scale: float,
    window: int = 0,
) -> np.ndarray:
    """Causal grouped-query attention, optionally over a sliding window.

    q: (T, H, D) for positions pos..pos+T-1; keys, values: (KV, S, D) with
    S = pos + T. A query at position p sees keys at p - window < k <= p
    (every k <= p when window is 0). Returns (T, H*D).
    """
    start = max(0, pos - window + 1) if window else 0
    keys, values = keys[:, start:], values[:, start:]
    t, n_heads, d = q.shape
    n_kv, s = keys.shape[0], keys.shape[1]
    group = n_heads // n_kv
    q = q.reshape(t, n_kv, group, d).transpose(1, 2, 0, 3).reshape(n_kv, group * t, d)
    scores = (q @ keys.transpose(0, 2, 1)) * np.float32(scale)  # (KV, G*T, S)
    if t > 1:  # a single query sees every key left after the window slice
        mask = attention_mask(t, s, pos - start, window)
        scores = scores.reshape(n_kv, group, t, s)
        scores[:, :, mask] = -np.inf
        scores = scores.reshape(n_kv, group * t, s)
    out = softmax_inplace(scores) @ values  # (KV, G*T, D)
    return out.reshape(n_kv, group, t, d).transpose(2, 0, 1, 3).reshape(t, n_heads * d)
