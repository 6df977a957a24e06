"""K-quants (super-blocks of 256 values): llama.cpp's reference quantizers in NumPy.

Each follows ggml-quants.c's `quantize_row_q*_K_ref` (the path `llama-quantize`
takes without an importance matrix): per sub-block a scale search
(search.py), the sub-block scales quantized to 4, 6 or 8 bits against one or
two float16 super-scales, then every value re-quantized against the scale it
will really be decoded with, and the codes packed as ggml-common.h lays them out.

Shapes: a chunk of B super-blocks is (B, 256); the searches see it transposed,
(n, S) with S = B * 256 / n sub-blocks of n values.
"""

from __future__ import annotations

import numpy as np

from corral.runtime.quantize.base import F32, Quantizer, f16_bytes, f16_round, sequential_sum
from corral.runtime.quantize.search import make_q3_quants, make_qkx2_quants, make_qx_quants

QK_K = 256


def _columns(blocks: np.ndarray, n: int) -> np.ndarray:
    """(B, 256) -> (n, B * 256 // n): sub-blocks of n values as columns."""
    return np.ascontiguousarray(blocks.reshape(-1, n).T)


def _rows(L: np.ndarray) -> np.ndarray:
    """Inverse of `_columns` for codes: (n, S) float codes -> (B, 256) int32."""
    return L.T.reshape(-1, QK_K).astype(np.int32)


def _nearest(values: np.ndarray) -> np.ndarray:
    """nearest_int as int32."""
    return np.rint(values).astype(np.int32)


def _requantize(x: np.ndarray, L: np.ndarray, d: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """`if (!d) continue; L = clamp(nearest_int(x / d))` per sub-block column: x, L (n, S)."""
    keep = d == 0  # (S,): those sub-blocks keep the search's codes
    q = np.clip(np.rint(x / np.where(keep, F32(1), d)), F32(lo), F32(hi))
    return np.where(keep, L, q)


def _signed_absmax(values: np.ndarray) -> np.ndarray:
    """Per super-block, the first of (B, k) values with the largest magnitude: (B,)."""
    at = np.abs(values).argmax(axis=1)[:, None]  # (B, 1)
    return np.take_along_axis(values, at, axis=1)[:, 0]


def _max_positive(values: np.ndarray) -> np.ndarray:
    """Per super-block max of (B, k) values, never below 0 (C starts from 0): (B,)."""
    return np.maximum(values.max(axis=1), F32(0))


def _pack_k4_scales(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """Q4_K/Q5_K: 8 scales and 8 mins of 6 bits, (B, 8) int32 each -> (B, 12) uint8."""
    out = np.empty((ls.shape[0], 12), dtype=np.int32)
    out[:, 0:4] = ls[:, :4] | ((ls[:, 4:] >> 4) << 6)
    out[:, 4:8] = lm[:, :4] | ((lm[:, 4:] >> 4) << 6)
    out[:, 8:12] = (ls[:, 4:] & 0xF) | ((lm[:, 4:] & 0xF) << 4)
    return out.astype(np.uint8)


def _pack_2bit(L: np.ndarray) -> np.ndarray:
    """(B, 256) codes 0..3 -> (B, 64): per 128-value half, byte l holds values l, l+32,
    l+64, l+96 at shifts 0, 2, 4, 6."""
    q = L.reshape(-1, 2, 4, 32)  # (B, half, shift, l)
    packed = q[:, :, 0] | (q[:, :, 1] << 2) | (q[:, :, 2] << 4) | (q[:, :, 3] << 6)
    return packed.reshape(-1, 64).astype(np.uint8)


def _six_bit_mins_search(
    x: np.ndarray, weights: np.ndarray, nmax: int, rmin: float, nstep: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Q4_K/Q5_K: search the 8 sub-blocks of 32 of each super-block, then quantize their
    scales and mins to 6 bits against the largest of each.
    Returns (L (32, S), d (B,), dmin (B,), scale codes (B, 8), min codes (B, 8))."""
    L, scales, mins = make_qkx2_quants(x, weights, nmax, rmin, 0.1, nstep, False)
    scales, mins = scales.reshape(-1, 8), mins.reshape(-1, 8)  # (B, 8)
    max_scale, max_min = _max_positive(scales), _max_positive(mins)
    inv_scale = np.where(max_scale > 0, F32(63) / max_scale, F32(0))[:, None]
    inv_min = np.where(max_min > 0, F32(63) / max_min, F32(0))[:, None]
    ls = np.minimum(_nearest(inv_scale * scales) & 0xFF, 63)  # uint8_t, then MIN(63, .)
    lm = np.minimum(_nearest(inv_min * mins) & 0xFF, 63)
    return L, max_scale / F32(63), max_min / F32(63), ls, lm


def _k4_requantize(
    x: np.ndarray,
    L: np.ndarray,
    d: np.ndarray,
    dmin: np.ndarray,
    ls: np.ndarray,
    lm: np.ndarray,
    top: int,
) -> np.ndarray:
    """Re-quantize with the stored float16 scales: `nearest_int((x + dm) / d)`."""
    # The 6-bit codes are stored losslessly, so they are what get_scale_min_k4 reads back.
    dl = (f16_round(d)[:, None] * ls.astype(np.float32)).reshape(-1)  # (S,)
    ml = (f16_round(dmin)[:, None] * lm.astype(np.float32)).reshape(-1)
    return _requantize(x + ml, L, dl, 0, top)


def _k4_weights(x: np.ndarray) -> np.ndarray:
    """Q4_K/Q5_K search weights: rms of the sub-block plus |x|: (32, S)."""
    av_x = np.sqrt(sequential_sum(x * x) / F32(32))
    return av_x + np.abs(x)


class Q4_KQ(Quantizer):
    """d, dmin (f16), scales[12] (6-bit scales and mins), qs[128] nibbles: 144 bytes."""

    name = "Q4_K"
    chunk_blocks = 256

    def _encode(self, blocks: np.ndarray) -> np.ndarray:
        x = _columns(blocks, 32)  # (32, S)
        L, d, dmin, ls, lm = _six_bit_mins_search(x, _k4_weights(x), 15, -1.0, 20)
        q = _rows(_k4_requantize(x, L, d, dmin, ls, lm, 15)).reshape(-1, 4, 2, 32)
        qs = (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(-1, 128).astype(np.uint8)
        head = [f16_bytes(d), f16_bytes(dmin), _pack_k4_scales(ls, lm), qs]
        return np.concatenate(head, axis=1)


class Q5_KQ(Quantizer):
    """d, dmin, scales[12], qh[32] fifth bits, qs[128] nibbles: 176 bytes."""

    name = "Q5_K"
    chunk_blocks = 256

    def _encode(self, blocks: np.ndarray) -> np.ndarray:
        x = _columns(blocks, 32)  # (32, S)
        L, d, dmin, ls, lm = _six_bit_mins_search(x, _k4_weights(x), 31, -0.5, 15)
        q = _rows(_k4_requantize(x, L, d, dmin, ls, lm, 31)).reshape(-1, 8, 32)  # (B, g, j)
        qh = np.zeros((q.shape[0], 32), dtype=np.int32)
        for g in range(8):  # bit g of qh[j]: the fifth bit of value j of 32-value group g
            qh |= (q[:, g] >> 4) << g
        low = (q & 0xF).reshape(-1, 4, 2, 32)
        qs = (low[:, :, 0] | (low[:, :, 1] << 4)).reshape(-1, 128)
        head = [f16_bytes(d), f16_bytes(dmin), _pack_k4_scales(ls, lm)]
        return np.concatenate([*head, qh.astype(np.uint8), qs.astype(np.uint8)], axis=1)


class Q2_KQ(Quantizer):
    """scales[16] (scale | min << 4), qs[64] 2-bit codes, d, dmin: 84 bytes."""

    name = "Q2_K"
    chunk_blocks = 256

    def _encode(self, blocks: np.ndarray) -> np.ndarray:
        x = _columns(blocks, 16)  # (16, S)
        L, scales, mins = make_qkx2_quants(x, np.abs(x), 3, -0.5, 0.1, 15, True)
        scales, mins = scales.reshape(-1, 16), mins.reshape(-1, 16)  # (B, 16)
        max_scale, max_min = _max_positive(scales), _max_positive(mins)
        ok_s, ok_m = (max_scale > 0)[:, None], (max_min > 0)[:, None]
        ls = np.where(ok_s, _nearest((F32(15) / max_scale)[:, None] * scales), 0)
        lm = np.where(ok_m, _nearest((F32(15) / max_min)[:, None] * mins), 0)
        sc = (ls & 0xFF) | ((lm << 4) & 0xFF)  # (B, 16) as the uint8_t stores them
        d = np.where(max_scale > 0, max_scale / F32(15), F32(0))
        dmin = np.where(max_min > 0, max_min / F32(15), F32(0))
        dl = (f16_round(d)[:, None] * (sc & 0xF).astype(np.float32)).reshape(-1)  # (S,)
        ml = (f16_round(dmin)[:, None] * (sc >> 4).astype(np.float32)).reshape(-1)
        q = _rows(_requantize(x + ml, L, dl, 0, 3))
        head = [sc.astype(np.uint8), _pack_2bit(q), f16_bytes(d), f16_bytes(dmin)]
        return np.concatenate(head, axis=1)


class Q3_KQ(Quantizer):
    """hmask[32] third bits, qs[64] 2-bit codes, scales[12] (16 x 6 bits), d: 110 bytes."""

    name = "Q3_K"
    chunk_blocks = 256

    def _encode(self, blocks: np.ndarray) -> np.ndarray:
        x = _columns(blocks, 16)  # (16, S)
        L, scales = make_q3_quants(x, 4)
        scales = scales.reshape(-1, 16)  # (B, 16)
        top = _signed_absmax(scales)
        ok = top != 0
        iscale = np.where(ok, F32(-32) / np.where(ok, top, F32(1)), F32(0))  # (B,)
        ls = np.where(ok[:, None], np.clip(_nearest(iscale[:, None] * scales), -32, 31) + 32, 0)
        d = np.where(ok, F32(1) / np.where(ok, iscale, F32(1)), F32(0))
        dl = (f16_round(d)[:, None] * (ls - 32).astype(np.float32)).reshape(-1)  # (S,)
        q = _rows(_requantize(x, L - F32(4), dl, -4, 3) + F32(4))  # (B, 256) 0..7
        hmask = np.packbits((q >> 2).astype(np.uint8).reshape(-1, 8, 32), axis=1, bitorder="little")
        scale_bytes = np.empty((ls.shape[0], 12), dtype=np.int32)
        scale_bytes[:, 0:8] = (ls[:, :8] & 0xF) | ((ls[:, 8:] & 0xF) << 4)
        high = (ls >> 4).reshape(-1, 4, 4)  # (B, j // 4, j % 4)
        scale_bytes[:, 8:12] = (
            high[:, 0] | (high[:, 1] << 2) | (high[:, 2] << 4) | (high[:, 3] << 6)
        )
        head = [hmask.reshape(-1, 32), _pack_2bit(q & 3), scale_bytes.astype(np.uint8)]
        return np.concatenate([*head, f16_bytes(d)], axis=1)


class Q6_KQ(Quantizer):
    """ql[128] low nibbles, qh[64] high 2 bits, scales[16] int8, d: 210 bytes."""

    name = "Q6_K"
    chunk_blocks = 256

    def _encode(self, blocks: np.ndarray) -> np.ndarray:
        x = _columns(blocks, 16)  # (16, S)
        L, scales = make_qx_quants(x, 32)
        scales = scales.reshape(-1, 16)  # (B, 16)
        top = _signed_absmax(scales)
        ok = np.abs(top) >= F32(1e-15)
        iscale = F32(-128) / np.where(ok, top, F32(1))  # (B,)
        d = F32(1) / iscale
        sc = np.minimum(_nearest(iscale[:, None] * scales), 127)  # (B, 16), int8 after the store
        sc = ((sc + 128) & 0xFF) - 128
        dl = (f16_round(d)[:, None] * sc.astype(np.float32)).reshape(-1)  # (S,)
        q = _rows(_requantize(x, L - F32(32), dl, -32, 31) + F32(32))  # (B, 256) 0..63
        low = (q & 0xF).reshape(-1, 2, 4, 32)  # (B, half, quarter, l)
        # per half: bytes 0..31 hold quarters 0 | 2 << 4, bytes 32..63 quarters 1 | 3 << 4
        ql = np.stack([low[:, :, 0] | (low[:, :, 2] << 4), low[:, :, 1] | (low[:, :, 3] << 4)], 2)
        ql = ql.reshape(-1, 128).astype(np.uint8)
        qh = _pack_2bit(q >> 4)  # the top 2 bits, laid out as Q2_K's codes
        out = np.concatenate([ql, qh, sc.astype(np.int8).view(np.uint8), f16_bytes(d)], axis=1)
        out[~ok] = 0  # memset: an all-zero super-block is all zero bytes
        return out


K_QUANTIZERS: tuple[type[Quantizer], ...] = (Q2_KQ, Q3_KQ, Q4_KQ, Q5_KQ, Q6_KQ)
