"""GGML tensor encodings as data: one class per type, registered in one table.

Each type knows its block size (elements per block), type size (bytes per
block) and how to dequantize a run of blocks to float32. The layouts follow
ggml-common.h; results are checked against gguf-py's `dequantize` in tests.

Dequantizing writes into one preallocated output, a cache-sized chunk of
blocks at a time, the chunks shared among the cores: a large tensor costs its
float32 output and a few MiB of temporaries, not several copies of itself.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import pairwise
from typing import ClassVar

import numpy as np

# (float32 chunk, destination of the same shape) -> None: writes the chunk, converted
Convert = Callable[[np.ndarray, np.ndarray], None]
CHUNK_VALUES = 1 << 18  # values decoded per step: 1 MiB of float32 output
N_THREADS = min(os.cpu_count() or 1, 8)
_pool = ThreadPoolExecutor(N_THREADS, thread_name_prefix="corral-dequant")


class QuantType:
    """Base class of an encoding. Subclasses set the class variables and `_decode`."""

    type_id: ClassVar[int]
    name: ClassVar[str]
    block_size: ClassVar[int]
    type_size: ClassVar[int]

    def nbytes(self, shape: tuple[int, ...]) -> int:
        if not shape:
            return self.type_size
        if shape[-1] % self.block_size:
            raise ValueError(
                f"{self.name}: row length {shape[-1]} is not a multiple of {self.block_size}"
            )
        return math.prod(shape) // self.block_size * self.type_size

    def dequantize(self, raw: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """Decode raw bytes (uint8) to a float32 array of `shape`."""
        out = np.empty(shape, dtype=np.float32)
        self.dequantize_into(raw, out)
        return out

    def dequantize_into(
        self, raw: np.ndarray, out: np.ndarray, convert: Convert | None = None
    ) -> None:
        """Decode raw bytes (uint8) into `out`, a C-contiguous array of their size: float32,
        or, with `convert`, whatever it writes (each decoded float32 chunk goes through
        `convert(chunk, out_part)`, so no float32 copy of the whole tensor is made)."""
        blocks = raw.reshape(-1, self.type_size)  # (n_blocks, type_size)
        values = out.reshape(blocks.shape[0], self.block_size)  # a view: out is contiguous
        step = max(1, CHUNK_VALUES // self.block_size)
        if blocks.shape[0] < 2 * N_THREADS * step:  # small: not worth the threads
            self._decode_range(blocks, values, 0, blocks.shape[0], step, convert)
            return
        bounds = [blocks.shape[0] * i // N_THREADS for i in range(N_THREADS + 1)]
        parts = [
            _pool.submit(self._decode_range, blocks, values, lo, hi, step, convert)
            for lo, hi in pairwise(bounds)
        ]
        for part in parts:
            part.result()

    def _decode_range(
        self,
        blocks: np.ndarray,
        values: np.ndarray,
        lo: int,
        hi: int,
        step: int,
        convert: Convert | None,
    ) -> None:
        scratch = np.empty((0 if convert is None else step, self.block_size), np.float32)
        for start in range(lo, hi, step):
            stop = min(hi, start + step)
            if convert is None:
                self._decode_into(blocks[start:stop], values[start:stop])
            else:
                decoded = scratch[: stop - start]  # (n, block_size) float32
                self._decode_into(blocks[start:stop], decoded)
                convert(decoded, values[start:stop])

    def _decode_into(self, blocks: np.ndarray, out: np.ndarray) -> None:
        """Decode (n, type_size) uint8 blocks into `out`, (n, block_size) float32."""
        out[...] = self._decode(blocks)

    def _decode(self, blocks: np.ndarray) -> np.ndarray:  # (n_blocks, block_size) float32
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.name


def _f16(blocks: np.ndarray, start: int) -> np.ndarray:
    """A float16 scale at byte `start` of each block, as a float32 column: (n, 1)."""
    return blocks[:, start : start + 2].copy().view(np.float16).astype(np.float32)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """Split (n, 16) packed bytes into (n, 32) values: low nibbles first, then high."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1)


def _fifth_bits(qh_bytes: np.ndarray) -> np.ndarray:
    """(n, 4) little-endian bytes of a u32 -> (n, 32) bits 0..31 as uint8."""
    return np.unpackbits(qh_bytes, axis=1, bitorder="little")


class _Plain(QuantType):
    """Unquantized element types, read directly as NumPy dtypes."""

    dtype: ClassVar[np.dtype]
    block_size = 1

    def dequantize_into(
        self, raw: np.ndarray, out: np.ndarray, convert: Convert | None = None
    ) -> None:
        values = raw.view(self.dtype).reshape(out.shape)
        if convert is None:
            np.copyto(out, values, casting="unsafe")
        else:
            convert(values.astype(np.float32), out)


class F32(_Plain):
    type_id, name, type_size, dtype = 0, "F32", 4, np.dtype("<f4")


class F16(_Plain):
    type_id, name, type_size, dtype = 1, "F16", 2, np.dtype("<f2")


class F64(_Plain):
    type_id, name, type_size, dtype = 28, "F64", 8, np.dtype("<f8")


class I8(_Plain):
    type_id, name, type_size, dtype = 24, "I8", 1, np.dtype("i1")


class I16(_Plain):
    type_id, name, type_size, dtype = 25, "I16", 2, np.dtype("<i2")


class I32(_Plain):
    type_id, name, type_size, dtype = 26, "I32", 4, np.dtype("<i4")


class BF16(QuantType):
    type_id, name, block_size, type_size = 30, "BF16", 1, 2

    def _decode(self, blocks: np.ndarray) -> np.ndarray:
        bits = blocks.view("<u2").astype(np.uint32) << 16  # (n, 1)
        return bits.view(np.float32)


class Q8_0(QuantType):
    type_id, name, block_size, type_size = 8, "Q8_0", 32, 34

    def _decode_into(self, blocks: np.ndarray, out: np.ndarray) -> None:
        np.multiply(_f16(blocks, 0), blocks[:, 2:].view(np.int8), out=out)


class Q4_0(QuantType):
    type_id, name, block_size, type_size = 2, "Q4_0", 32, 18

    def _decode(self, blocks: np.ndarray) -> np.ndarray:
        d = _f16(blocks, 0)
        q = _nibbles(blocks[:, 2:]).astype(np.int8) - np.int8(8)
        return d * q.astype(np.float32)


class Q4_1(QuantType):
    type_id, name, block_size, type_size = 3, "Q4_1", 32, 20

    def _decode(self, blocks: np.ndarray) -> np.ndarray:
        d, m = _f16(blocks, 0), _f16(blocks, 2)
        return d * _nibbles(blocks[:, 4:]).astype(np.float32) + m


class Q5_0(QuantType):
    type_id, name, block_size, type_size = 6, "Q5_0", 32, 22

    def _decode(self, blocks: np.ndarray) -> np.ndarray:
        d = _f16(blocks, 0)
        q = _nibbles(blocks[:, 6:]) | (_fifth_bits(blocks[:, 2:6]) << 4)
        return d * (q.astype(np.float32) - 16.0)


class Q5_1(QuantType):
    type_id, name, block_size, type_size = 7, "Q5_1", 32, 24

    def _decode(self, blocks: np.ndarray) -> np.ndarray:
        d, m = _f16(blocks, 0), _f16(blocks, 2)
        q = _nibbles(blocks[:, 8:]) | (_fifth_bits(blocks[:, 4:8]) << 4)
        return d * q.astype(np.float32) + m


class _LayoutOnly(QuantType):
    """A type whose block layout is known (so files using it open and can be
    listed) but which this runtime cannot decode yet."""

    def _decode(self, blocks: np.ndarray) -> np.ndarray:
        raise UnsupportedQuantType(self.type_id, self.name)


def _layout_only(type_id: int, name: str, block_size: int, type_size: int) -> QuantType:
    cls = type(name, (_LayoutOnly,), {})
    cls.type_id, cls.name, cls.block_size, cls.type_size = type_id, name, block_size, type_size
    return cls()


@dataclass(frozen=True)
class UnsupportedQuantType(ValueError):
    type_id: int
    name: str = ""

    def __str__(self) -> str:
        known = ", ".join(t.name for t in QUANT_TYPES.values() if not isinstance(t, _LayoutOnly))
        what = self.name or f"GGML type id {self.type_id}"
        return f"tensor type {what} is not supported by corral's runtime (supported: {known})"


QUANT_TYPES: dict[int, QuantType] = {
    t.type_id: t() for t in (F32, F16, BF16, F64, I8, I16, I32, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1)
}
# Known layouts (ggml-common.h) that do not decode yet: files using them still open.
for _args in ((9, "Q8_1", 32, 36),):
    QUANT_TYPES[_args[0]] = _layout_only(*_args)
QUANT_TYPES_BY_NAME: dict[str, QuantType] = {t.name: t for t in QUANT_TYPES.values()}


def register(qtype: QuantType) -> None:
    """Add (or replace) a type in both tables."""
    QUANT_TYPES[qtype.type_id] = qtype
    QUANT_TYPES_BY_NAME[qtype.name] = qtype


def quant_type(type_id: int) -> QuantType:
    try:
        return QUANT_TYPES[type_id]
    except KeyError:
        raise UnsupportedQuantType(type_id) from None


# The K-quants (Q2_K..Q6_K, Q8_K) subclass QuantType, so they live in kquants.py,
# which registers them when it loads. Importing it here completes the tables
# whichever of the two modules is imported first.
from corral.runtime import kquants as _kquants  # noqa: E402, F401
