"""Weight matrices kept as bfloat16: half the bytes of float32, for the same products.

Decoding reads every weight once per step, so its speed is the memory's rate divided
by the weights' bytes. A quantized GGUF's weights are dequantized at load and then
rounded to bfloat16 (8 bits of mantissa: the error of a 4- or 8-bit quantization is
far larger), which halves what each step reads and what the model holds in memory.

    w = Bf16Matrix.from_float32(values)   # (out, in) float32, rounded
    y = linear(x, w)                      # x (R, in) @ w.T as float32: (R, out)
    rows = w[token_ids]                   # float32 rows: embedding lookups

Up to MATVEC_ROWS rows of x (decoding, batched or not) run through the compiled
kernels of `bf16_kernels`, which read the weights once for all of them. More rows (a
prompt) widen the weights a block at a time into float32 and multiply by BLAS: that
is bound by arithmetic, not by reading weights.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numba
import numpy as np

from corral.runtime import bf16_kernels as kernels
from corral.runtime.pages import weight_array

# Tensor types kept as float32: a float file's weights are used exactly as they are.
FLOAT_TYPES = frozenset({"F32", "F16", "F64"})
MATVEC_ROWS = 8  # rows of x that go through the compiled kernels, 4 at a time
KERNEL_ROWS = 4  # rows of x one kernel pass multiplies (fewer are padded with zeros)
WIDEN_BYTES = 4 << 20  # float32 bytes of weights widened at a time for BLAS

# Numba's fallback thread pool (when OpenMP is missing) must not be entered by two
# threads at once; the kernels are short, so every call takes turns.
_KERNEL_LOCK = threading.Lock()
_scratch = threading.local()


def stores_bf16(tensor_type: str) -> bool:
    """Whether a weight matrix stored in the file as `tensor_type` (a GGML type name) is
    kept as bfloat16 once dequantized: every quantized type, and BF16 itself."""
    return tensor_type not in FLOAT_TYPES


@dataclass(frozen=True, eq=False)
class Bf16Matrix:
    """An (out, in) weight matrix stored as the top halves of its float32 values."""

    bits: np.ndarray  # (out, in) uint16, C-contiguous

    @classmethod
    def from_float32(cls, values: np.ndarray) -> Bf16Matrix:
        """Round `values` (out, in) float32 to the nearest bfloat16 (ties to even)."""
        values = np.ascontiguousarray(values, dtype=np.float32)
        bits = weight_array(values.shape, np.uint16)
        round_into(values, bits)
        return cls(bits)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.bits.shape

    @property
    def nbytes(self) -> int:
        return self.bits.nbytes

    def __getitem__(self, rows: np.ndarray | slice | int) -> np.ndarray:
        """The float32 values of the given rows (an embedding lookup)."""
        return widen(self.bits[rows])

    def float32(self) -> np.ndarray:
        """The whole matrix as float32 (for tests and comparisons)."""
        return widen(self.bits)


def round_into(values: np.ndarray, bits: np.ndarray) -> None:
    """bits (uint16) = `values` (float32, the same shape, both C-contiguous) rounded to
    the nearest bfloat16, ties to even: a `quants.Convert` for dequantizing straight
    into a Bf16Matrix's bits."""
    kernels.round_to_bf16(values.reshape(-1).view(np.uint32), bits.reshape(-1))


def widen(bits: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """bfloat16 bits (any shape, uint16) as float32 values: exact. `out`, if given, is a
    C-contiguous float32 array of the same shape."""
    bits = np.ascontiguousarray(bits)
    if out is None:
        out = np.empty(bits.shape, dtype=np.float32)
    kernels.widen_into(bits.reshape(-1), out.reshape(-1).view(np.uint32))
    return out


def linear(x: np.ndarray, weight: Bf16Matrix) -> np.ndarray:
    """x (R, in) @ weight.T: (R, out) float32."""
    if x.shape[0] > MATVEC_ROWS:
        return _widened_matmul(x, weight.bits)
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty((x.shape[0], weight.shape[0]), dtype=np.float32)  # (R, out)
    for start in range(0, x.shape[0], KERNEL_ROWS):
        _matvec(x[start : start + KERNEL_ROWS], weight.bits, out[start : start + KERNEL_ROWS])
    return out


def _matvec(x: np.ndarray, bits: np.ndarray, out: np.ndarray) -> None:
    """out (r, N) = x (r, K) @ widen(bits).T for r <= KERNEL_ROWS."""
    rows = x.shape[0]
    if rows == 1:
        with _KERNEL_LOCK:
            kernels.matvec_x1(bits, x, out, numba.get_num_threads())
        return
    padded = np.zeros((KERNEL_ROWS, x.shape[1]), dtype=np.float32)  # (4, K)
    padded[:rows] = x
    result = out if rows == KERNEL_ROWS else np.empty((KERNEL_ROWS, out.shape[1]), np.float32)
    with _KERNEL_LOCK:
        kernels.matvec_x4(bits, padded, result, numba.get_num_threads())
    if result is not out:
        out[...] = result[:rows]


def _widened_matmul(x: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """x (R, K) @ widen(bits (N, K)).T through BLAS, a block of rows at a time: (R, N)."""
    n, k = bits.shape
    rows = max(1, WIDEN_BYTES // (4 * k))
    block = _scratch_block(min(rows, n) * k)
    out = np.empty((x.shape[0], n), dtype=np.float32)  # (R, N)
    for start in range(0, n, rows):
        part = bits[start : start + rows]
        values = widen(part, block[: part.size].reshape(part.shape))  # (rows, K)
        np.matmul(x, values.T, out=out[:, start : start + part.shape[0]])
    return out


def _scratch_block(size: int) -> np.ndarray:
    """A float32 buffer of at least `size` values, kept per thread between calls."""
    block = getattr(_scratch, "block", None)
    if block is None or block.size < size:
        block = _scratch.block = np.empty(size, dtype=np.float32)
    return block
