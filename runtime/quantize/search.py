"""llama.cpp's searches for a sub-block's scale (ggml-quants.c), over many sub-blocks at once.

Every function takes values sub-block-major transposed: `x` is (n, S), column s
holding the n values of sub-block s, so that a sum over a sub-block is a
row-by-row reduction over axis 0 that adds in the same order, in float32, as
the C loop (`sequential_sum`), and each step of a search is one NumPy call over
all S sub-blocks. The arithmetic mirrors the C expressions operation by
operation (`w*l*x` is `(w*l)*x`, constants are float32, `nearest_int` is
round-half-even like `np.rint`), so the codes and scales come out bit-identical.

Each returns codes `L` (n, S) as float32 integers and per-sub-block floats (S,).
"""

from __future__ import annotations

import numpy as np

from corral.runtime.quantize.base import F32, sequential_sum

GROUP_MAX_EPS = F32(1e-15)


def _codes(scaled: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """MAX(lo, MIN(hi, nearest_int(scaled))), in place on a fresh array."""
    np.rint(scaled, out=scaled)
    return np.clip(scaled, F32(lo), F32(hi), out=scaled)


def _signed_absmax(x: np.ndarray) -> np.ndarray:
    """Per column, the first value of largest magnitude: (S,)."""
    at = np.abs(x).argmax(axis=0)[None, :]  # (1, S)
    return np.take_along_axis(x, at, axis=0)[0]


def _weighted_error(
    w: np.ndarray, x: np.ndarray, scale: np.ndarray, offset: np.ndarray, L: np.ndarray, mad: bool
) -> np.ndarray:
    """sum_i w[i] * err(scale*L[i] + offset - x[i]), err = |.| or square: (S,)."""
    diff = scale * L
    diff += offset
    diff -= x
    if mad:
        np.abs(diff, out=diff)
    else:
        diff *= diff
    diff *= w
    return sequential_sum(diff)


def make_qkx2_quants(
    x: np.ndarray,
    w: np.ndarray,
    nmax: int,
    rmin: float,
    rdelta: float,
    nstep: int,
    use_mad: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Codes 0..nmax with a scale and a (non-positive) offset, least-squares refined over
    nstep + 1 candidate ranges. Returns (L (n, S), scale (S,), the_min (S,) = -offset)."""
    lo = x.min(axis=0)
    lo = np.where(lo > 0, F32(0), lo)  # (S,)
    hi = x.max(axis=0)
    flat = hi == lo
    span = np.where(flat, F32(1), hi - lo)
    sum_w = sequential_sum(w)
    sum_x = sequential_sum(w * x)
    iscale = F32(nmax) / span
    scale = F32(1) / iscale
    shifted = x - lo  # (n, S)
    L = _codes(iscale * shifted, 0, nmax)
    best = _weighted_error(w, x, scale, lo, L, use_mad)
    offset = lo
    for step in range(nstep + 1):
        # C reuses `min`, which a better candidate replaces: later ranges start from it
        iscale = (F32(rmin) + F32(rdelta) * F32(step) + F32(nmax)) / span
        La = _codes(iscale * shifted, 0, nmax)
        wl = w * La
        sum_l = sequential_sum(wl)
        sum_l2 = sequential_sum(wl * La)
        sum_xl = sequential_sum(np.multiply(wl, x, out=wl))
        D = sum_w * sum_l2 - sum_l * sum_l
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
        positive = this_min > 0
        this_min[positive] = 0
        this_scale = np.where(positive, sum_xl / sum_l2, this_scale)
        err = _weighted_error(w, x, this_scale, this_min, La, use_mad)
        better = (D > 0) & (err < best)
        if better.any():
            L = np.where(better, La, L)
            best = np.where(better, err, best)
            scale = np.where(better, this_scale, scale)
            offset = np.where(better, this_min, offset)
            span = np.where(flat, F32(1), hi - offset)
            shifted = np.subtract(x, offset, out=shifted)
    L[:, flat] = 0
    scale = np.where(flat, F32(0), scale)
    return L, scale, -offset


def make_qx_quants(x: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric codes 0..2*nmax-1 (stored + nmax) weighted by x^2 (rmse_type 1, no
    importance weights), trying 18 scales around nmax/max. Returns (L (n, S), scale (S,))."""
    top = _signed_absmax(x)  # (S,)
    zero = np.abs(top) < GROUP_MAX_EPS
    top = np.where(zero, F32(1), top)
    w = x * x
    wx = w * x

    def sums(iscale: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        l = _codes(iscale * x, -nmax, nmax - 1)  # noqa: E741 - the C name
        sumlx = sequential_sum(wx * l)
        wl = w * l
        return l, sumlx, sequential_sum(np.multiply(wl, l, out=wl))

    L, sumlx, suml2 = sums(F32(-nmax) / top)
    scale = np.where(suml2 != 0, sumlx / suml2, F32(0))
    best = scale * sumlx
    for step in (*range(-9, 0), *range(1, 10)):
        l, sumlx, suml2 = sums(-(F32(nmax) + F32(0.1) * F32(step)) / top)  # noqa: E741
        better = (suml2 > 0) & (sumlx * sumlx > best * suml2)
        if better.any():
            L = np.where(better, l, L)
            scale = np.where(better, sumlx / suml2, scale)
            best = np.where(better, scale * sumlx, best)
    L += F32(nmax)
    L[:, zero] = 0
    return L, np.where(zero, F32(0), scale)


def make_q3_quants(x: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric codes (stored + nmax) refined value by value, up to 5 passes, as
    make_q3_quants(do_rmse=true). Returns (L (n, S), scale (S,))."""
    top = _signed_absmax(x)  # (S,)
    zero = np.abs(top) < GROUP_MAX_EPS
    top = np.where(zero, F32(1), top)
    L = _codes((F32(-nmax) / top) * x, -nmax, nmax - 1)  # (n, S)
    w = x * x
    wx = w * x
    sumlx = sequential_sum(wx * L)
    suml2 = sequential_sum((w * L) * L)
    for _ in range(5):
        changed = False
        for i in range(x.shape[0]):
            Li = L[i]
            slx = sumlx - wx[i] * Li
            sl2 = suml2 - (w[i] * Li) * Li
            new_l = _codes(x[i] * sl2 / slx, -nmax, nmax - 1)
            take = (slx > 0) & (new_l != Li)
            slx += wx[i] * new_l
            sl2 += (w[i] * new_l) * new_l
            take &= (sl2 > 0) & (slx * slx * suml2 > sumlx * sumlx * sl2)
            if take.any():
                changed = True
                L[i] = np.where(take, new_l, Li)
                sumlx = np.where(take, slx, sumlx)
                suml2 = np.where(take, sl2, suml2)
        if not changed:
            break
    L += F32(nmax)
    L[:, zero] = 0
    return L, np.where(zero | ~(suml2 > 0), F32(0), sumlx / suml2)
