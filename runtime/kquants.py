"""K-quant encodings (llama.cpp's super-blocks of 256 values), decoded with NumPy.

A block holds one or two float16 super-scales `d` (and `dmin`), 8 or 16 small
integer sub-block scales (and mins), and the packed values; a value is
`(d * scale) * q - (dmin * min)` for its sub-block. Layouts and the order of the
float operations follow ggml-quants.c (`dequantize_row_q*_K`), so results are
bit-identical to llama.cpp and to gguf-py's `dequantize`.

How it stays fast: NumPy pays per inner loop, so per-block scalars (scales,
mins) are handled sub-block-major, as (S, n) arrays whose inner axis runs over
blocks; the packed values are unpacked into a uint8 (n, 256) array with one
NumPy call per shift; the float pass is one cast and a multiply (and subtract)
in place in the output. Big tensors go in chunks of blocks, so temporaries stay
small (a few MiB, whatever the tensor) and in cache.
"""

from __future__ import annotations

import numpy as np

from corral.runtime.quants import QuantType, register

QK_K = 256


def _f16(blocks: np.ndarray, start: int) -> np.ndarray:
    """The float16 at byte `start` of each block, as float32: (n,)."""
    return blocks[:, start : start + 2].view(np.float16)[:, 0].astype(np.float32)


def _columns(blocks: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Bytes start..stop of each block, sub-block-major: (stop - start, n) uint8."""
    return np.ascontiguousarray(blocks[:, start:stop].T)


def _unpack(packed: np.ndarray, shifts: tuple[int, ...], mask: int) -> np.ndarray:
    """(n, g, L) packed bytes -> (n, g, len(shifts), L) uint8: `(packed >> shift) & mask`.

    Shifts run on uint16 lanes (NumPy's uint8 shifts are slow); the bits a low
    byte takes from its neighbour are above `mask` and cleared with it.
    """
    n, g, length = packed.shape
    src = np.ascontiguousarray(packed).view(np.uint16)  # (n, g, L / 2)
    out = np.empty((n, g, len(shifts), length), dtype=np.uint8)
    lanes = out.view(np.uint16)  # (n, g, k, L / 2)
    for k, shift in enumerate(shifts):
        np.right_shift(src, shift, out=lanes[:, :, k])
    out &= np.uint8(mask)
    return out


def _bit_planes(bits: np.ndarray) -> np.ndarray:
    """(n, 32) bytes -> (n, 8, 32) uint8 with [:, g, l] = bit g of byte l, as 0 or 1."""
    src = np.ascontiguousarray(bits).view(np.uint64)  # (n, 4)
    out = np.empty((bits.shape[0], 8, 32), dtype=np.uint8)
    lanes = out.view(np.uint64)  # (n, 8, 4)
    for g in range(8):
        np.right_shift(src, g, out=lanes[:, g])
    lanes &= np.uint64(0x0101010101010101)
    return out


def _scale_q(
    q: np.ndarray, scale: np.ndarray, out: np.ndarray, offset: np.ndarray | None = None
) -> None:
    """out = scale * q - offset per sub-block: q (n, S, L) integers, scale/offset (S, n)."""
    view = out.reshape(q.shape)  # (n, S, L)
    np.copyto(view, q, casting="unsafe")
    view *= scale.T[:, :, None]
    if offset is not None:
        view -= offset.T[:, :, None]


def scale_min_k4(sc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K/Q5_K's 12 bytes of 6-bit scales and mins: (12, n) -> 2 x (8, n) uint8.

    Bytes 0-3 hold scales 0-3 in their low 6 bits and bytes 4-7 mins 0-3; for
    4-7 the low 4 bits come from the nibbles of bytes 8-11 and the top 2 from
    the top bits of bytes 0-7 (ggml-quants.c `get_scale_min_k4`).
    """
    lo, hi, mix = sc[0:4], sc[4:8], sc[8:12]  # (4, n)
    scales = np.concatenate([lo & 0x3F, (mix & 0x0F) | ((lo >> 6) << 4)])  # (8, n)
    mins = np.concatenate([hi & 0x3F, (mix >> 4) | ((hi >> 6) << 4)])  # (8, n)
    return scales, mins


def _k4_scales(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K/Q5_K sub-block scales `d * sc` and offsets `dmin * m`: 2 x (8, n) float32."""
    d, dmin = _f16(blocks, 0), _f16(blocks, 2)  # (n,)
    sc, mn = scale_min_k4(_columns(blocks, 4, 16))  # (8, n)
    return d * sc.astype(np.float32), dmin * mn.astype(np.float32)


def scales_q3(sc: np.ndarray) -> np.ndarray:
    """Q3_K's 12 bytes of 16 6-bit scales, re-centred: (12, n) -> (16, n) int8.

    Scale i takes its low 4 bits from byte i % 8 (low nibble for i < 8, high
    after) and its top 2 bits from byte 8 + i % 4 at bit 2 * (i // 4).
    """
    low = np.concatenate([sc[0:8] & 0x0F, sc[0:8] >> 4])  # (16, n)
    high = np.concatenate([(sc[8:12] >> shift) & 0x03 for shift in (0, 2, 4, 6)])  # (16, n)
    return (low | (high << 4)).view(np.int8) - np.int8(32)


class _KQuant(QuantType):
    """Super-blocks of 256 values, each type decoding straight into the output."""

    block_size = QK_K


class Q2_K(_KQuant):
    """scales[16] (scale | min << 4), qs[64] 2-bit, d, dmin: 84 bytes."""

    type_id, name, type_size = 10, "Q2_K", 84

    def _decode_into(self, blocks: np.ndarray, out: np.ndarray) -> None:
        n = blocks.shape[0]
        d, dmin = _f16(blocks, 80), _f16(blocks, 82)  # (n,)
        sc = _columns(blocks, 0, 16)  # (16, n)
        dl = d * (sc & 0x0F).astype(np.float32)  # (16, n)
        ml = dmin * (sc >> 4).astype(np.float32)  # (16, n)
        # Each 128-value half reads its 32 bytes four times, at shifts 0, 2, 4, 6.
        qs = blocks[:, 16:80].reshape(n, 2, 32)  # (n, 2, 32)
        q = _unpack(qs, (0, 2, 4, 6), 0x03).reshape(n, 16, 16)  # (n, 16, 16)
        _scale_q(q, dl, out, ml)


class Q3_K(_KQuant):
    """hmask[32], qs[64] 2-bit, scales[12] 6-bit, d: 110 bytes. q = low | high << 2, - 4."""

    type_id, name, type_size = 11, "Q3_K", 110

    def _decode_into(self, blocks: np.ndarray, out: np.ndarray) -> None:
        n = blocks.shape[0]
        d = _f16(blocks, 108)  # (n,)
        dl = d * scales_q3(_columns(blocks, 96, 108)).astype(np.float32)  # (16, n)
        qs = blocks[:, 32:96].reshape(n, 2, 32)  # (n, 2, 32)
        q = _unpack(qs, (0, 2, 4, 6), 0x03).reshape(n, 8, 32)  # (n, 8, 32)
        # Bit g of hmask[l] is the third bit of value l of 32-value group g.
        high = _bit_planes(blocks[:, 0:32])  # (n, 8, 32)
        high *= np.uint8(4)  # << 2 (NumPy's uint8 left shift is slow)
        q |= high
        q -= np.uint8(4)  # wraps: read as int8 it is -4..3
        _scale_q(q.view(np.int8).reshape(n, 16, 16), dl, out)


class Q4_K(_KQuant):
    """d, dmin, scales[12] 6-bit scales and mins, qs[128] 4-bit: 144 bytes."""

    type_id, name, type_size = 12, "Q4_K", 144

    def _decode_into(self, blocks: np.ndarray, out: np.ndarray) -> None:
        n = blocks.shape[0]
        dl, ml = _k4_scales(blocks)  # (8, n)
        # Each 64-value group reads its 32 bytes twice: low nibbles, then high.
        qs = blocks[:, 16:144].reshape(n, 4, 32)  # (n, 4, 32)
        q = _unpack(qs, (0, 4), 0x0F).reshape(n, 8, 32)  # (n, 8, 32)
        _scale_q(q, dl, out, ml)


class Q5_K(_KQuant):
    """d, dmin, scales[12], qh[32] fifth bits, qs[128] 4-bit: 176 bytes."""

    type_id, name, type_size = 13, "Q5_K", 176

    def _decode_into(self, blocks: np.ndarray, out: np.ndarray) -> None:
        n = blocks.shape[0]
        dl, ml = _k4_scales(blocks)  # (8, n)
        qs = blocks[:, 48:176].reshape(n, 4, 32)  # (n, 4, 32)
        q = _unpack(qs, (0, 4), 0x0F).reshape(n, 8, 32)  # (n, 8, 32)
        # Bit g of qh[l] is the fifth bit of value l of 32-value group g.
        high = _bit_planes(blocks[:, 16:48])  # (n, 8, 32)
        high *= np.uint8(16)  # << 4
        q |= high
        _scale_q(q, dl, out, ml)


class Q6_K(_KQuant):
    """ql[128] low nibbles, qh[64] 2-bit highs, scales[16] int8, d: 210 bytes. q - 32."""

    type_id, name, type_size = 14, "Q6_K", 210

    def _decode_into(self, blocks: np.ndarray, out: np.ndarray) -> None:
        n = blocks.shape[0]
        d = _f16(blocks, 208)  # (n,)
        dl = d * _columns(blocks, 192, 208).view(np.int8).astype(np.float32)  # (16, n)
        # Per 128-value half: 64 ql bytes read as low then high nibbles give the
        # low 4 bits of 4 groups of 32; 32 qh bytes at shifts 0, 2, 4, 6 the top 2.
        ql = blocks[:, 0:128].reshape(n, 2, 64)  # (n, 2, 64)
        qh = blocks[:, 128:192].reshape(n, 2, 32)  # (n, 2, 32)
        q = _unpack(ql, (0, 4), 0x0F).reshape(n, 2, 4, 32)  # (n, 2, 4, 32)
        high = _unpack(qh, (0, 2, 4, 6), 0x03)  # (n, 2, 4, 32)
        high *= np.uint8(16)  # << 4
        q |= high
        q -= np.uint8(32)  # wraps: read as int8 it is -32..31
        _scale_q(q.view(np.int8).reshape(n, 16, 16), dl, out)


class Q8_K(_KQuant):
    """d (float32), qs[256] int8, bsums[16] int16 (sums for dot products; unused): 292 bytes.

    llama.cpp's intermediate type for activations; rare in files, decoded anyway.
    """

    type_id, name, type_size = 15, "Q8_K", 292

    def _decode_into(self, blocks: np.ndarray, out: np.ndarray) -> None:
        d = blocks[:, 0:4].view(np.float32)  # (n, 1)
        np.copyto(out, blocks[:, 4:260].view(np.int8), casting="unsafe")
        out *= d


K_QUANT_TYPES: tuple[type[QuantType], ...] = (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K)
for _cls in K_QUANT_TYPES:
    register(_cls())
