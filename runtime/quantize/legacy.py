"""Float and 32-value block types, byte-identical to llama.cpp's reference quantizers.

F16 and BF16 round to nearest even (BF16 quiets NaNs as ggml does); Q8_0,
Q4_0, Q4_1, Q5_0 and Q5_1 follow ggml-quants.c's `quantize_row_*_ref`
operation by operation in float32, which is also what gguf-py's
`gguf.quants.quantize` and `llama-quantize --pure` produce.
"""

from __future__ import annotations

import numpy as np

from corral.runtime.quantize.base import F32, Quantizer, f16_bytes, round_away


class _Plain(Quantizer):
    """Element types: a whole tensor is cast at once, no blocks."""

    def quantize(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=np.float32)
        with np.errstate(over="ignore"):  # beyond float16's range is inf, as in C
            flat = self._cast(values.reshape(-1))  # (n,) of 2- or 4-byte items
        return flat.view(np.uint8).reshape(*values.shape[:-1], -1)

    def _cast(self, values: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class F32Q(_Plain):
    name = "F32"

    def _cast(self, values: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(values, dtype="<f4")


class F16Q(_Plain):
    name = "F16"

    def _cast(self, values: np.ndarray) -> np.ndarray:
        return values.astype("<f2")


class BF16Q(_Plain):
    """ggml_compute_fp32_to_bf16: NaN -> quiet NaN, else round to nearest even."""

    name = "BF16"

    def _cast(self, values: np.ndarray) -> np.ndarray:
        bits = values.view(np.uint32)
        nan = (bits & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
        rounded = bits + (np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1)))
        out = (rounded >> np.uint32(16)).astype("<u2")
        out[nan] = ((bits[nan] >> np.uint32(16)) | np.uint32(64)).astype("<u2")
        return out


def _signed_absmax(blocks: np.ndarray) -> np.ndarray:
    """The value of largest magnitude in each block, first one on ties, +0.0 for a
    block of zeros (C starts from `max = 0` and replaces it only on a larger |v|): (n, 1)."""
    at = np.abs(blocks).argmax(axis=1)[:, None]  # (n, 1)
    return np.take_along_axis(blocks, at, axis=1) + F32(0)  # -0.0 + 0.0 is +0.0


def _first_min(blocks: np.ndarray) -> np.ndarray:
    """Each block's minimum as C's `if (v < min) min = v` finds it: where the minimum is
    zero, the sign of the first zero in the block (gguf-py's `min` may differ there): (n, 1)."""
    lo = blocks.min(axis=1, keepdims=True)
    zero = np.nonzero(lo[:, 0] == 0)[0]
    if zero.size:
        rows = blocks[zero]
        first = (rows == 0).argmax(axis=1)[:, None]
        lo[zero] = np.take_along_axis(rows, first, axis=1)
    return lo


def _inverse(d: np.ndarray) -> np.ndarray:
    """`d ? 1.0f/d : 0.0f`."""
    return np.where(d == 0, F32(0), F32(1) / d)


def _nibbles(q: np.ndarray) -> np.ndarray:
    """(n, 32) uint8 codes -> (n, 16) bytes: code j in the low nibble, code j + 16 high."""
    return (q[:, :16] & np.uint8(0x0F)) | (q[:, 16:] << np.uint8(4))


def _fifth_bits(q: np.ndarray) -> np.ndarray:
    """(n, 32) 5-bit codes -> (n, 4) bytes: bit j of the little-endian u32 is code j's bit 4."""
    return np.packbits(q >> np.uint8(4), axis=1, bitorder="little")


def _codes(scaled: np.ndarray, top: int) -> np.ndarray:
    """C's `MIN(top, (int8_t)(v))` for v >= 0: truncate toward zero, clamp above."""
    return np.minimum(scaled.astype(np.uint8), np.uint8(top))


class Q8_0Q(Quantizer):
    name = "Q8_0"

    def _encode(self, blocks: np.ndarray) -> np.ndarray:
        amax = np.abs(blocks).max(axis=1, keepdims=True)  # (n, 1)
        d = amax / F32(127)
        q = round_away(blocks * _inverse(d)).astype(np.int8)  # (n, 32)
        return np.concatenate([f16_bytes(d[:, 0]), q.view(np.uint8)], axis=1)


class Q4_0Q(Quantizer):
    name = "Q4_0"

    def _encode(self, blocks: np.ndarray) -> np.ndarray:
        d = _signed_absmax(blocks) / F32(-8)  # (n, 1)
        scaled = blocks * _inverse(d)
        scaled += F32(8.5)
        return np.concatenate([f16_bytes(d[:, 0]), _nibbles(_codes(scaled, 15))], axis=1)


class Q4_1Q(Quantizer):
    name = "Q4_1"

    def _encode(self, blocks: np.ndarray) -> np.ndarray:
        lo = _first_min(blocks)  # (n, 1)
        d = (blocks.max(axis=1, keepdims=True) - lo) / F32(15) + F32(0)  # C: +0.0 if flat
        scaled = (blocks - lo) * _inverse(d)
        scaled += F32(0.5)
        q = _codes(scaled, 15)
        return np.concatenate([f16_bytes(d[:, 0]), f16_bytes(lo[:, 0]), _nibbles(q)], axis=1)


class Q5_0Q(Quantizer):
    name = "Q5_0"

    def _encode(self, blocks: np.ndarray) -> np.ndarray:
        d = _signed_absmax(blocks) / F32(-16)  # (n, 1)
        scaled = blocks * _inverse(d)
        scaled += F32(16.5)
        q = _codes(scaled, 31)
        return np.concatenate([f16_bytes(d[:, 0]), _fifth_bits(q), _nibbles(q)], axis=1)


class Q5_1Q(Quantizer):
    name = "Q5_1"

    def _encode(self, blocks: np.ndarray) -> np.ndarray:
        lo = _first_min(blocks)  # (n, 1)
        d = (blocks.max(axis=1, keepdims=True) - lo) / F32(31) + F32(0)  # C: +0.0 if flat
        scaled = (blocks - lo) * _inverse(d)
        scaled += F32(0.5)
        q = _codes(scaled, 31)
        head = [f16_bytes(d[:, 0]), f16_bytes(lo[:, 0]), _fifth_bits(q), _nibbles(q)]
        return np.concatenate(head, axis=1)


LEGACY_QUANTIZERS: tuple[type[Quantizer], ...] = (
    F32Q,
    F16Q,
    BF16Q,
    Q8_0Q,
    Q4_0Q,
    Q4_1Q,
    Q5_0Q,
    Q5_1Q,
)
