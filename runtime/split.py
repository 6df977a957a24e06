"""Batched products on both cores: a helper process computes half of each weight's rows.

Only for float32 matrices (a float16 or float32 file's): a quantized file's matrices
are bfloat16, whose compiled kernels already run on every core (runtime/bf16.py).

Why a process: decoding a few rows at once is bound by reading the weights, and one core
alone reads memory at about two thirds of the rate both reach (13 vs 20 GB/s here).
OpenBLAS's own threads only help the one-row product (sgemv); for 2-8 rows its threaded
sgemm packs the weight and runs no faster than one core. Its single-threaded
small-matrix kernel is fast on blocks of a few hundred rows, so each core streams half
the weight through it. Threads of this process cannot share that work: every hand-over
waits on the GIL and on waking a sleeping thread (~100 us on these VMs, 120 hand-overs a
token). A child forked once the weights are loaded reads the very same pages
(copy-on-write, never written) and hands over through a spinning flag in shared memory
in microseconds. (A memfd for the weights would let a fresh process map them; it loaded
2-3x slower than private huge pages, measured before the weights moved to ordinary
pages, runtime/pages.py, and not measured since.)

    split = SplitLinear(matrices)   # forks the helper; matrices: the model's (out, in) weights
    y = split.linear(x, w)          # x (R, in) @ w.T: (R, out)

Rows outside SPLIT_ROWS, other weights, or a helper gone fall back to `ops.linear`
in this process; the answers agree to float32 rounding either way.

Measured limits (SmolLM2, 4 rows): the product is what costs. On one core alone the
small kernel takes 4 rows through 269 MB of weights in ~28 ms where a one-row sgemv
takes ~20 (2 rows: 21, 3 rows: 26, 8 rows: 33), so at 4 rows it is partly bound by its
own arithmetic. Blocks of 16 to 400 rows, weights stored transposed (in, out) or as
contiguous panels, and pairs of rows interleaved over L2-resident blocks were all no
faster. The rest of a 4-row step is ~3 ms (products stubbed out; 2 ms for one row),
and waiting for the helper ~2 ms over its 121 hand-overs. Pinning each process to its
own core only moved the wait into the main process's own half (same tokens/s), and a
55/45 split gained nothing beyond noise. Nor did a cut learned per product from which
side finished first (the helper stamping its finish time): the waits are a few slow
hand-overs, not a steady lag (median lag ~2 us, p90 ~100 us; step time unchanged over
14 alternating rounds). Storing a tied output matrix transposed, (in, out), for the
NN kernel read it 20-40% slower at 4 rows. Splitting the rows of x instead (each process
two rows through the whole weight, at the same time, hoping the second read hits the
shared L3) made 4 streams 2.09x one instead of 2.80x: each process reads all of it.

One row stays with OpenBLAS's threaded sgemv (24-26 GB/s, the machine's rate), though
it runs some small weights on one thread (576 x 576, SmolLM2's attention output).
Splitting those with the helper, duplicating x into 2 rows for the small kernel, made a
SmolLM2 token 1.1-1.8x slower: OpenBLAS's thread, still spinning from the product before,
takes the helper's core. Splitting every one-row product with OpenBLAS on one thread
(OPENBLAS_NUM_THREADS=1) avoids that but only ties: 24.5 ms a token either way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import warnings
import weakref

import numpy as np

from corral.runtime.arch.ops import linear as local_linear
from corral.runtime.compute_guard import COMPUTE
from corral.runtime.pages import inherited
from corral.runtime.split_protocol import DONE, Control, stacked_matmul
from corral.runtime.split_worker import run_helper

log = logging.getLogger(__name__)

SPLIT_ROWS = range(2, 9)  # rows of x the helper takes half of
SPIN_SECONDS = 0.001  # waiting for the helper, between re-checks that it still lives
DEAD_SECONDS = 10.0  # no answer for this long: the helper is taken for dead
FORK_WARNING = "This process .* is multi-threaded"  # Python 3.12+, see _fork_helper


class SplitLinear:
    """`linear` for the given weights, with half of each batched product in a helper."""

    def __init__(self, matrices: list[np.ndarray]) -> None:
        # by id(): the list keeps each matrix alive, so no other array can share its id
        self._index = {id(m): i for i, m in enumerate(matrices)}
        self._matrices = matrices
        self.control = Control(
            SPLIT_ROWS.stop - 1,
            max(m.shape[1] for m in matrices),
            max(m.shape[0] for m in matrices),
        )
        self._lock = threading.Lock()
        self.pid, self._wake_w = _fork_helper(self.control, matrices)
        self._alive = True
        self._finalizer = weakref.finalize(self, _stop, self.control, self.pid, self._wake_w)
        log.info("split helper started (pid %d)", self.pid)

    def linear(self, x: np.ndarray, weight: np.ndarray) -> np.ndarray:
        """x (R, in) @ weight.T for weight (out, in): (R, out)."""
        if x.shape[0] not in SPLIT_ROWS or not self._alive:
            return local_linear(x, weight)
        matrix = self._index.get(id(weight))
        if matrix is None or weight.shape[0] < 2:
            return local_linear(x, weight)
        with self._lock:
            return self._split(np.ascontiguousarray(x, dtype=np.float32), weight, matrix)

    def _split(self, x: np.ndarray, weight: np.ndarray, matrix: int) -> np.ndarray:
        cut = weight.shape[0] // 2  # this process takes rows [0, cut), the helper the rest
        out = np.empty((x.shape[0], weight.shape[0]), dtype=np.float32)  # (R, out)
        seq = self.control.post(x, matrix, cut)
        if self.control.sleeping:
            _write_wake(self._wake_w)
        stacked_matmul(x, weight[:cut], out[:, :cut])
        if self._wait(seq):
            out[:, cut:] = self.control.result(x.shape[0], weight.shape[0] - cut)
        else:
            stacked_matmul(x, weight[cut:], out[:, cut:])
        return out

    def _wait(self, seq: int) -> bool:
        """Spin until the helper answers `seq`; False (and no more splitting) if it died."""
        started = time.perf_counter()
        while not self.control.done(seq, SPIN_SECONDS):
            _write_wake(self._wake_w)  # it may have gone to sleep just before the post
            exited = os.waitpid(self.pid, os.WNOHANG)[0] == self.pid
            if exited or time.perf_counter() - started > DEAD_SECONDS:
                log.warning("split helper %d gone: batched products stay on one core", self.pid)
                self._alive = False
                return False
        return True

    @property
    def jobs_done(self) -> int:
        """How many products the helper has computed its half of."""
        return int(self.control.slots[DONE])

    def close(self) -> None:
        """Stop the helper (also done when this object is garbage collected)."""
        self._alive = False
        self._finalizer()


def _fork_helper(control: Control, matrices: list[np.ndarray]) -> tuple[int, int]:
    """Fork the helper: (its pid, the write end of its wake-up pipe). OSError (no more
    processes or memory) leaves nothing behind."""
    wake_r, wake_w = os.pipe()
    last_job = control.last_job
    try:
        # no product is running on OpenBLAS's threads while it forks; the child inherits
        # these weights, not those of the other models loaded (runtime/pages.py)
        with COMPUTE.exclusive(), inherited(matrices), warnings.catch_warnings():
            # Python 3.12+ warns of forking a threaded process: a lock another thread holds
            # stays held in the child. The child takes none: it runs NumPy's small products
            # on memory it already has, reads a pipe and exits with os._exit.
            warnings.filterwarnings("ignore", FORK_WARNING, DeprecationWarning)
            pid = os.fork()
            if pid == 0:
                os.close(wake_w)
                run_helper(control, matrices, wake_r, last_job)  # never returns
    except OSError:
        os.close(wake_w)
        raise
    finally:
        os.close(wake_r)
    os.set_blocking(wake_w, False)
    return pid, wake_w


def _write_wake(fd: int) -> None:
    with contextlib.suppress(OSError):  # full (the helper will see the job anyway) or closed
        os.write(fd, b"w")


def _stop(control: Control, pid: int, wake_w: int) -> None:
    control.stop()
    os.close(wake_w)  # a sleeping helper reads end-of-file and exits
    with contextlib.suppress(ChildProcessError):
        deadline = time.monotonic() + 2
        while os.waitpid(pid, os.WNOHANG)[0] == 0:
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                break
            time.sleep(0.005)
