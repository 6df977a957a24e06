"""What the process computing a batched product and its helper share: the blocked
product both run, and the control block they hand work over through.

The control block is an anonymous shared mapping made before the fork: HEADER int64
slots, then the rows of x (max_rows * max_in float32), then the helper's part of the
answer (max_rows * max_out float32). The main process writes x and the job's fields,
then bumps JOB; the helper computes, writes its answer, then sets DONE to that JOB.
On x86 stores are seen in order, and each side reads the other's counter before the
data it guards.

Both sides spin while they wait, and yield the core between rounds of checks
(`os.sched_yield`, a no-op when nothing else waits for the core). The OS may put both
processes on one core for a while (another program busy on the other): without the
yield, each hand-over then waits for the spinner's time slice to run out, and a 4-row
step of SmolLM2 took 968 ms instead of 73 (`bench/bench_split_colocated.py`).
"""

from __future__ import annotations

import mmap
import os
import time

import numpy as np

# OpenBLAS's small-matrix sgemm (no packing, one thread) takes x (R, in) @ block.T when
# rows*R <= 1200 and rows*R*in <= 1e6. It streams each weight block once, near memory
# speed for 1-2 rows and ~1.4x slower at 4 (runtime/split.py).
SMALL_KERNEL_OUTPUTS = 1200
SMALL_KERNEL_MACS = 1_000_000

JOB, DONE, SLEEPING, STOP, MATRIX, CUT, N_ROWS = range(7)
HEADER = 8  # int64 slots


def block_rows(n_rows: int, n_in: int) -> int:
    """Weight rows per small-kernel product for x (n_rows, n_in)."""
    return max(1, min(SMALL_KERNEL_OUTPUTS // n_rows, SMALL_KERNEL_MACS // (n_rows * n_in)))


def stacked_matmul(x: np.ndarray, weight: np.ndarray, out: np.ndarray) -> None:
    """out (R, n) = x (R, in) @ weight.T for weight (n, in): one NumPy call runs the
    blocks (whole blocks of `block_rows`, then the rest) without taking the GIL between."""
    n_rows, n_in = x.shape
    rows = block_rows(n_rows, n_in)
    blocks = weight.shape[0] // rows
    whole = blocks * rows
    if blocks:
        w3 = weight[:whole].reshape(blocks, rows, n_in).transpose(0, 2, 1)  # (B, in, rows)
        o3 = out[:, :whole].reshape(n_rows, blocks, rows).transpose(1, 0, 2)  # (B, R, rows)
        np.matmul(x, w3, out=o3)
    if whole < weight.shape[0]:
        np.matmul(x, weight[whole:].T, out=out[:, whole:])


class Control:
    """The shared control block, seen from either process."""

    def __init__(self, max_rows: int, max_in: int, max_out: int) -> None:
        self._mmap = mmap.mmap(-1, HEADER * 8 + 4 * max_rows * (max_in + max_out))  # shared
        self.slots = np.frombuffer(self._mmap, dtype=np.int64, count=HEADER)
        self._x = np.frombuffer(self._mmap, np.float32, max_rows * max_in, HEADER * 8)
        self._out = np.frombuffer(
            self._mmap, np.float32, max_rows * max_out, HEADER * 8 + self._x.nbytes
        )

    # ----- the main process ------------------------------------------------------

    def post(self, x: np.ndarray, matrix: int, cut: int) -> int:
        """Hand rows [cut, out) of x @ matrices[matrix].T to the helper; the job's number."""
        self._x[: x.size].reshape(x.shape)[...] = x
        s = self.slots
        s[MATRIX], s[CUT], s[N_ROWS] = matrix, cut, x.shape[0]
        seq = int(s[JOB]) + 1
        s[JOB] = seq
        return seq

    def done(self, seq: int, seconds: float) -> bool:
        """Spin up to `seconds` for the helper to finish job `seq`."""
        slots = self.slots
        deadline = time.perf_counter() + seconds
        while slots[DONE] != seq:
            for _ in range(32):
                if slots[DONE] == seq:
                    return True
            os.sched_yield()  # the helper may be waiting for this core
            if time.perf_counter() > deadline:
                return False
        return True

    def result(self, n_rows: int, n: int) -> np.ndarray:
        return self._out[: n_rows * n].reshape(n_rows, n)  # (R, n)

    @property
    def last_job(self) -> int:
        return int(self.slots[JOB])

    @property
    def sleeping(self) -> bool:
        return bool(self.slots[SLEEPING])

    def stop(self) -> None:
        self.slots[STOP] = 1

    # ----- the helper ------------------------------------------------------------

    def job(self, matrices: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The posted job: x (R, in), the helper's weight rows (n, in), its answer (R, n)."""
        s = self.slots
        weight = matrices[int(s[MATRIX])][int(s[CUT]) :]  # (n, in)
        n_rows = int(s[N_ROWS])
        x = self._x[: n_rows * weight.shape[1]].reshape(n_rows, weight.shape[1])
        return x, weight, self.result(n_rows, weight.shape[0])
