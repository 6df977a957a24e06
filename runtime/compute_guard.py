"""Keeps fork() away from running products.

Forking runs OpenBLAS's fork handler in this process, which stops its thread pool;
a product another thread is running on that pool at that moment never returns.
So the model's compute (`Llama.run_layers`, `Llama.logits`) holds COMPUTE shared,
and `SplitLinear` forks holding it exclusively: a fork waits for the steps under way
(tens of ms), and steps wait while it forks (a few ms). Waiting forks go first, so a
steady stream of steps cannot starve one. Not re-entrant: a thread holding it shared
must not take it again.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator


class ComputeGuard:
    """A readers-writer lock: many computing threads, or one forking thread."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._computing = 0
        self._forks_waiting = 0
        self._forking = False

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._forking or self._forks_waiting:
                self._cond.wait()
            self._computing += 1
        try:
            yield
        finally:
            with self._cond:
                self._computing -= 1
                if not self._computing:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._forks_waiting += 1
            while self._forking or self._computing:
                self._cond.wait()
            self._forks_waiting -= 1
            self._forking = True
        try:
            yield
        finally:
            with self._cond:
                self._forking = False
                self._cond.notify_all()


COMPUTE = ComputeGuard()
