"""The shared shape of a quantizer: float32 rows in, the GGML type's bytes out.

A quantizer encodes blocks of `block_size` values into `type_size` bytes each.
The driver here cuts a tensor into chunks of whole blocks (so temporaries stay
in cache and memory stays bounded) and fills one preallocated output; each type
only writes `_encode`, which sees a (n_blocks, block_size) float32 array.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

import numpy as np

from corral.runtime.quants import QUANT_TYPES_BY_NAME, QuantType

F32 = np.float32
THREADS = min(2, os.cpu_count() or 1)  # llama-quantize on these machines uses 2 as well


class Quantizer:
    """Base class: subclasses set `name` (a GGML type name) and `_encode`."""

    name: ClassVar[str]
    chunk_blocks: ClassVar[int] = 8192  # blocks per `_encode` call

    @property
    def qtype(self) -> QuantType:
        return QUANT_TYPES_BY_NAME[self.name]

    @property
    def block_size(self) -> int:
        return self.qtype.block_size

    @property
    def type_size(self) -> int:
        return self.qtype.type_size

    def can_quantize(self, shape: tuple[int, ...]) -> bool:
        return bool(shape) and shape[-1] % self.block_size == 0

    def quantize(self, values: np.ndarray) -> np.ndarray:
        """(..., n) float values -> (..., n // block_size * type_size) uint8."""
        values = np.ascontiguousarray(values, dtype=np.float32)
        shape = values.shape
        if not self.can_quantize(shape):
            raise ValueError(
                f"{self.name}: row length {shape[-1] if shape else 0} "
                f"is not a multiple of its block size {self.block_size}"
            )
        blocks = values.reshape(-1, self.block_size)  # (n_blocks, block_size)
        out = np.empty((blocks.shape[0], self.type_size), dtype=np.uint8)
        step = self.chunk_blocks
        starts = range(0, blocks.shape[0], step)

        def encode(start: int) -> None:
            with np.errstate(all="ignore"):  # per thread: the state is a context variable
                out[start : start + step] = self._encode(blocks[start : start + step])

        if THREADS > 1 and len(starts) > 1:
            # NumPy releases the GIL inside its loops, so chunks overlap on two cores
            with ThreadPoolExecutor(THREADS) as pool:
                list(pool.map(encode, starts))
        else:
            for start in starts:
                encode(start)
        return out.reshape(*shape[:-1], shape[-1] // self.block_size * self.type_size)

    def _encode(self, blocks: np.ndarray) -> np.ndarray:
        """(n, block_size) float32 -> (n, type_size) uint8."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<quantizer {self.name}>"


def f16_bytes(values: np.ndarray) -> np.ndarray:
    """float32 (n,) -> (n, 2) uint8 of float16, round to nearest even (GGML_FP32_TO_FP16)."""
    return values.astype(np.float16).view(np.uint8).reshape(-1, 2)


def f16_round(values: np.ndarray) -> np.ndarray:
    """The float32 value a float16 store and load gives back."""
    return values.astype(np.float16).astype(np.float32)


_JUST_BELOW_HALF = np.nextafter(F32(0.5), F32(0))


def round_away(values: np.ndarray) -> np.ndarray:
    """C's roundf (ties away from zero) on float32, as float32 integers.

    Adding the float just below 0.5 (with the value's sign) and truncating rounds
    ties away and everything else to nearest: checked against the definition for
    every float32 in [-128, 128], the range Q8_0 uses.
    """
    return np.trunc(values + np.copysign(_JUST_BELOW_HALF, values))


def sequential_sum(terms: np.ndarray) -> np.ndarray:
    """Sum (n, S) float32 over axis 0 in index order, as C's `for` loops do.

    NumPy's reduction over the outer axis of a C-contiguous array adds row by
    row (pairwise summation is only used along the contiguous axis), so this
    rounds exactly like `s = 0; for (i...) s += t[i];` in float.
    """
    if terms.shape[1] > 1:
        return np.add.reduce(terms, axis=0)
    total = terms[0].copy()  # one column: NumPy would sum it pairwise
    for row in terms[1:]:
        total += row
    return total
