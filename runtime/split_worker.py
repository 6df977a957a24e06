"""The helper of runtime/split.py: a forked child that computes its half of each
batched product, reading the weights the fork shares with the main process.

It spins for the next job while jobs keep coming (yielding the core between rounds
of checks: runtime/split_protocol.py says why), and otherwise sleeps on a pipe
until the main process writes to it. It exits when told to stop, or when the pipe
reads end-of-file because the main process is gone. It never returns into the code
it was forked from.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import numpy as np

from corral.runtime.split_protocol import DONE, JOB, SLEEPING, STOP, Control, stacked_matmul

IDLE_SPIN_SECONDS = 0.002  # the helper spins this long for the next job, then sleeps
HELPER_NAME = "corral-split"


def run_helper(control: Control, matrices: list[np.ndarray], wake_r: int, seen: int) -> None:
    """The child's whole life, straight after fork(); `seen`: the last job before it
    (the main process may post the next one before the child gets here)."""
    status = 1
    try:
        quiet_signals()
        with contextlib.suppress(OSError):  # what `top` and `ps -o comm` call it
            Path("/proc/self/comm").write_text(HELPER_NAME)
        os.closerange(3, wake_r)  # the daemon's sockets and files are not the helper's
        os.closerange(wake_r + 1, os.sysconf("SC_OPEN_MAX"))
        serve(control, matrices, wake_r, seen)
        status = 0
    finally:
        os._exit(status)


def quiet_signals() -> None:
    """Ctrl-C is for the main process; a TERM or HUP ends the helper at once. (The
    handlers inherited from the main process would write to its event loop's socket.)"""
    with contextlib.suppress(ValueError):  # only the main thread may (the forking one is)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for number in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(number, signal.SIG_DFL)


def serve(control: Control, matrices: list[np.ndarray], wake_r: int, seen: int) -> None:
    slots = control.slots
    while (job := next_job(control, seen, wake_r)) is not None:
        x, weight, out = control.job(matrices)
        stacked_matmul(x, weight, out)
        seen = job
        slots[DONE] = job


def next_job(control: Control, seen: int, wake_r: int) -> int | None:
    """The next job's number once it is posted; None when it is time to exit."""
    slots = control.slots
    while True:
        deadline = time.perf_counter() + IDLE_SPIN_SECONDS
        while time.perf_counter() < deadline:
            for _ in range(64):
                if slots[JOB] != seen or slots[STOP]:
                    return None if slots[STOP] else int(slots[JOB])
            os.sched_yield()  # the main process may be waiting for this core
        slots[SLEEPING] = 1
        if slots[JOB] == seen and not slots[STOP] and not os.read(wake_r, 4096):
            return None  # the main process closed the pipe: it is gone
        slots[SLEEPING] = 0
