"""Compiled loops over bfloat16 weights (Numba): the products that bound decoding.

A bfloat16 number is the top 16 bits of a float32, so widening one is a shift: each
weight is read as 2 bytes and multiplied in float32, against float32 activations.

Decoding is bound by reading the weights, and one core reading a single sequential
stream gets only about half of what it can (7.6 against 13 GB/s here; OpenBLAS's
matrix-vector product interleaves rows for the same reason). So every kernel walks
STREAMS sequential runs of weight rows at once, one row from each per step, and
multiplies each weight row by every row of x while it is in registers: 4 rows of x
cost about what 1 does (`python bench/bench_bf16.py`).

Kernels take C-contiguous arrays: weights (N, K) uint16, x (R, K) float32,
out (R, N) float32, and compute out = x @ widen(weights).T over rows [start, stop)
of the weights; the `matvec*` entry points split all N rows among Numba's threads.
Compiled on first use and cached on disk next to this file (or NUMBA_CACHE_DIR).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

STREAMS = 4  # sequential runs of weight rows read together
FASTMATH = {"reassoc", "contract"}  # vectorized sums and fused multiply-adds, no NaN tricks
_SERIAL = {"fastmath": FASTMATH, "boundscheck": False, "nogil": True, "cache": True}
_PARALLEL = {"parallel": True, "boundscheck": False, "nogil": True, "cache": True}


@intrinsic
def _float_of_bits(typingctx, bits):  # type: ignore[no-untyped-def]
    """The float32 whose bits are `bits` (uint32): a bitcast, no conversion."""
    signature = types.float32(types.uint32)

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        return builder.bitcast(args[0], ir.FloatType())

    return signature, codegen


@njit(inline="always", **_SERIAL)
def _widen(half):  # type: ignore[no-untyped-def]
    return _float_of_bits(np.uint32(half) << np.uint32(16))


@njit(**_SERIAL)
def rows_x1(w, x, out, start, stop):  # type: ignore[no-untyped-def]
    """out[0, start:stop] for one row of x."""
    x0 = x[0]
    per = (stop - start) // STREAMS
    for i in range(per):
        n0 = start + i
        n1, n2, n3 = n0 + per, n0 + 2 * per, n0 + 3 * per
        ra, rb, rc, rd = w[n0], w[n1], w[n2], w[n3]
        a = b = c = d = np.float32(0.0)
        for k in range(w.shape[1]):
            xk = x0[k]
            a += _widen(ra[k]) * xk
            b += _widen(rb[k]) * xk
            c += _widen(rc[k]) * xk
            d += _widen(rd[k]) * xk
        out[0, n0], out[0, n1], out[0, n2], out[0, n3] = a, b, c, d
    for n in range(start + STREAMS * per, stop):
        row = w[n]
        a = np.float32(0.0)
        for k in range(w.shape[1]):
            a += _widen(row[k]) * x0[k]
        out[0, n] = a


@njit(inline="always", **_SERIAL)
def _one_row_x4(row, x0, x1, x2, x3):  # type: ignore[no-untyped-def]
    a0 = a1 = a2 = a3 = np.float32(0.0)
    for k in range(row.shape[0]):
        v = _widen(row[k])
        a0 += v * x0[k]
        a1 += v * x1[k]
        a2 += v * x2[k]
        a3 += v * x3[k]
    return a0, a1, a2, a3


@njit(**_SERIAL)
def rows_x4(w, x, out, start, stop):  # type: ignore[no-untyped-def]
    """out[:4, start:stop] for four rows of x."""
    x0, x1, x2, x3 = x[0], x[1], x[2], x[3]
    per = (stop - start) // STREAMS
    for i in range(per):
        n0 = start + i
        n1, n2, n3 = n0 + per, n0 + 2 * per, n0 + 3 * per
        ra, rb, rc, rd = w[n0], w[n1], w[n2], w[n3]
        a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = np.float32(0.0)
        c0 = c1 = c2 = c3 = d0 = d1 = d2 = d3 = np.float32(0.0)
        for k in range(w.shape[1]):
            va, vb, vc, vd = _widen(ra[k]), _widen(rb[k]), _widen(rc[k]), _widen(rd[k])
            y0, y1, y2, y3 = x0[k], x1[k], x2[k], x3[k]
            a0 += va * y0
            a1 += va * y1
            a2 += va * y2
            a3 += va * y3
            b0 += vb * y0
            b1 += vb * y1
            b2 += vb * y2
            b3 += vb * y3
            c0 += vc * y0
            c1 += vc * y1
            c2 += vc * y2
            c3 += vc * y3
            d0 += vd * y0
            d1 += vd * y1
            d2 += vd * y2
            d3 += vd * y3
        out[0, n0], out[1, n0], out[2, n0], out[3, n0] = a0, a1, a2, a3
        out[0, n1], out[1, n1], out[2, n1], out[3, n1] = b0, b1, b2, b3
        out[0, n2], out[1, n2], out[2, n2], out[3, n2] = c0, c1, c2, c3
        out[0, n3], out[1, n3], out[2, n3], out[3, n3] = d0, d1, d2, d3
    for n in range(start + STREAMS * per, stop):
        out[0, n], out[1, n], out[2, n], out[3, n] = _one_row_x4(w[n], x0, x1, x2, x3)


@njit(**_PARALLEL)
def matvec_x1(w, x, out, parts):  # type: ignore[no-untyped-def]
    """out (1, N) = x (1, K) @ widen(w (N, K)).T, in `parts` runs of rows on threads."""
    n = w.shape[0]
    for p in prange(parts):
        rows_x1(w, x, out, p * n // parts, (p + 1) * n // parts)


@njit(**_PARALLEL)
def matvec_x4(w, x, out, parts):  # type: ignore[no-untyped-def]
    """out (4, N) = x (4, K) @ widen(w (N, K)).T, in `parts` runs of rows on threads."""
    n = w.shape[0]
    for p in prange(parts):
        rows_x4(w, x, out, p * n // parts, (p + 1) * n // parts)


@njit(**_SERIAL)
def widen_into(bits, out):  # type: ignore[no-untyped-def]
    """out (n,) uint32 = bits (n,) uint16 << 16: the float32 bits of bfloat16 values.
    One thread: a parallel loop here would fight OpenBLAS's spinning threads for the
    cores between the products it feeds (10x slower measured)."""
    for i in range(bits.shape[0]):
        out[i] = np.uint32(bits[i]) << np.uint32(16)


@njit(inline="always", **_SERIAL)
def _rounded(v):  # type: ignore[no-untyped-def]
    """float32 bits `v` (uint32) rounded to the nearest bfloat16, ties to even; a NaN
    stays a (quiet) NaN."""
    if (v & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000):
        return np.uint16((v >> np.uint32(16)) | np.uint32(0x40))
    lsb = (v >> np.uint32(16)) & np.uint32(1)
    return np.uint16((v + np.uint32(0x7FFF) + lsb) >> np.uint32(16))


@njit(**_SERIAL)
def round_to_bf16(src, dst):  # type: ignore[no-untyped-def]
    """dst (n,) uint16 = src (n,) float32 bits (as uint32), rounded (`_rounded`)."""
    for i in range(src.shape[0]):
        dst[i] = _rounded(src[i])
