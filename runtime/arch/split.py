"""Small-batch matrix products split across the cores by hand.

A decoding step of a few sequences multiplies a handful of rows by every
weight matrix. OpenBLAS runs that as a GEMM that packs the whole weight per
call, or as one matrix-vector product per row, and neither reads the weights
only once. Here each core takes half of the weight's output rows and runs it
as single-threaded GEMMs over blocks of rows small enough to stay in its L2
cache: the weights stream from memory once for the whole batch.

Needs OpenBLAS's per-thread thread count (`openblas_set_num_threads_local`,
OpenBLAS >= 0.3.27, which NumPy's wheels bundle). Without it, or on one core,
`split_available()` is False and callers use plain products.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

BLOCK_BYTES = 512 << 10  # weight rows per GEMM call: a block that stays in a core's L2
SET_LOCAL = "openblas_set_num_threads_local"


def _load_set_local() -> Callable[[int], int] | None:
    """OpenBLAS's per-calling-thread `set_num_threads`, from the library NumPy loaded."""
    libs = Path(np.__file__).parent.parent / "numpy.libs"
    for path in sorted(libs.glob("libscipy_openblas*")) + sorted(libs.glob("libopenblas*")):
        try:
            fn = getattr(ctypes.CDLL(str(path)), SET_LOCAL)
        except (OSError, AttributeError):
            continue
        fn.restype, fn.argtypes = ctypes.c_int, [ctypes.c_int]
        return fn
    log.info("no %s in NumPy's BLAS: small batches use plain products", SET_LOCAL)
    return None


_set_local = _load_set_local()
N_WAYS = min(os.cpu_count() or 1, 8)


def split_available() -> bool:
    return _set_local is not None and N_WAYS > 1


class _Worker:
    """A thread that runs one job at a time for the thread that created it."""

    def __init__(self) -> None:
        self._go, self._done = threading.Lock(), threading.Lock()
        self._go.acquire()
        self._done.acquire()
        self._job: Callable[[], None] = lambda: None
        self._error: BaseException | None = None
        threading.Thread(target=self._loop, name="corral-split", daemon=True).start()

    def _loop(self) -> None:
        assert _set_local is not None
        _set_local(1)
        while True:
            self._go.acquire()
            try:
                self._job()
            except BaseException as exc:  # handed to the caller by wait()
                self._error = exc
            self._done.release()

    def start(self, job: Callable[[], None]) -> None:
        self._job = job
        self._go.release()

    def wait(self) -> BaseException | None:
        """Block until the job has run; the exception it raised, if any."""
        self._done.acquire()
        error, self._error = self._error, None
        return error


_workers = threading.local()  # each calling thread (one per loaded model) has its own


def _my_workers() -> list[_Worker]:
    workers = getattr(_workers, "list", None)
    if workers is None:
        workers = _workers.list = [_Worker() for _ in range(N_WAYS - 1)]
    return workers


def _gemm_rows(x: np.ndarray, weight: np.ndarray, out: np.ndarray, lo: int, hi: int) -> None:
    """out[:, lo:hi] = x @ weight[lo:hi].T, one L2-sized block of weight rows at a time."""
    step = max(1, BLOCK_BYTES // (weight.shape[1] * weight.itemsize))
    for start in range(lo, hi, step):
        end = min(hi, start + step)
        np.matmul(x, weight[start:end].T, out=out[:, start:end])  # (N, end-start)


def split_linear(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """x (N, in) @ weight.T for weight (out, in), the output rows shared among the cores."""
    assert _set_local is not None
    out = np.empty((x.shape[0], weight.shape[0]), dtype=np.float32)  # (N, out)
    n_out = weight.shape[0]
    bounds = [n_out * i // N_WAYS for i in range(N_WAYS + 1)]
    workers = _my_workers()
    for worker, lo, hi in zip(workers, bounds[1:-1], bounds[2:], strict=True):
        worker.start(lambda lo=lo, hi=hi: _gemm_rows(x, weight, out, lo, hi))
    previous = _set_local(1)
    try:
        _gemm_rows(x, weight, out, 0, bounds[1])
    finally:
        _set_local(previous)
        errors = [e for e in [w.wait() for w in workers] if e is not None]
    if errors:
        raise errors[0]
    return out
