"""runtime/arch/ops.py's RoPE against the formula written out: llama's pairs (2i, 2i+1)
and NeoX's halves (i, i + n/2) turn by position * theta_i; dims past rope_dim stay."""

from __future__ import annotations

import numpy as np
import pytest

from corral.runtime.arch.llama import halves_to_pairs, inv_frequencies
from corral.runtime.arch.ops import rope, rotation


def rotate_pairs(
    x: np.ndarray, positions: np.ndarray, theta: np.ndarray, first: np.ndarray, second: np.ndarray
) -> np.ndarray:
    """x (T, H, D) with dims first[i] and second[i] turned by positions * theta[i], in float64."""
    out = x.astype(np.float64)
    angle = positions[:, None, None] * theta[None, None, :]  # (T, 1, n/2)
    a, b = out[..., first], out[..., second]
    out[..., first] = a * np.cos(angle) - b * np.sin(angle)
    out[..., second] = a * np.sin(angle) + b * np.cos(angle)
    return out


@pytest.mark.parametrize(("head_dim", "rope_dim"), [(64, 64), (16, 8), (32, 24)])
def test_rope_turns_pairs_and_leaves_the_tail(head_dim: int, rope_dim: int) -> None:
    rng = np.random.default_rng(head_dim + rope_dim)
    x = rng.standard_normal((5, 3, head_dim), dtype=np.float32)
    positions = np.array([0, 1, 7, 300, 4095])
    theta = inv_frequencies(10000.0, rope_dim)  # (rope_dim/2,)
    half = rope_dim // 2
    ours = rope(x, rotation(theta, positions, head_dim))
    want = rotate_pairs(x, positions, theta, np.arange(half) * 2, np.arange(half) * 2 + 1)
    np.testing.assert_allclose(ours, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(ours[..., rope_dim:], x[..., rope_dim:])


@pytest.mark.parametrize(("head_dim", "rope_dim"), [(64, 64), (16, 8)])
def test_neox_halves_reordered_into_pairs_rotate_alike(head_dim: int, rope_dim: int) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 2, head_dim), dtype=np.float32)  # in NeoX's layout
    positions = np.array([3, 9, 27, 81])
    theta = inv_frequencies(1e6, rope_dim)
    half = rope_dim // 2
    neox = rotate_pairs(x, positions, theta, np.arange(half), np.arange(half) + half)
    order = halves_to_pairs(head_dim, rope_dim)
    ours = rope(np.ascontiguousarray(x[..., order]), rotation(theta, positions, head_dim))
    np.testing.assert_allclose(ours, neox[..., order], rtol=1e-5, atol=1e-5)


def test_rope_takes_a_strided_slice() -> None:
    qkv = np.random.default_rng(4).standard_normal((3, 96), dtype=np.float32)
    qk = qkv[:, :64].reshape(3, 4, 16)  # rows of a wider array, as Llama.qkv slices them
    rot = rotation(inv_frequencies(10000.0, 16), np.arange(3), 16)
    np.testing.assert_array_equal(rope(qk, rot), rope(np.ascontiguousarray(qk), rot))
