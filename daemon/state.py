"""What the daemon's handlers share: settings, the model store, the scheduler."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from aiohttp import web

from corral.daemon.config import DaemonConfig
from corral.daemon.scheduler import Scheduler
from corral.registry.store import InstalledModel, Store

LONG_WORK_THREADS = 32  # concurrent generations and pulls; queues come with issue 5


@dataclass
class DaemonState:
    config: DaemonConfig
    store: Store
    scheduler: Scheduler
    cancels: set[threading.Event] = field(default_factory=set)  # of running work
    # Threads for long work (generations, pulls), apart from to_thread's default pool.
    workers: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(LONG_WORK_THREADS, "corral-work")
    )
    stopping: bool = False

    async def resolve(self, name: str) -> InstalledModel:
        """The installed model `name` (InvalidName / ModelNotFound otherwise)."""
        return await asyncio.to_thread(self.store.resolve, name)

    @contextlib.contextmanager
    def cancellable(self) -> Iterator[threading.Event]:
        """A cancel Event for one piece of work, set for all of them at shutdown."""
        cancel = threading.Event()
        if self.stopping:
            cancel.set()
        self.cancels.add(cancel)
        try:
            yield cancel
        finally:
            self.cancels.discard(cancel)

    def cancel_all(self) -> None:
        self.stopping = True
        self.scheduler.shutdown()  # queued requests are refused, running ones cancelled here
        for cancel in list(self.cancels):
            cancel.set()


STATE = web.AppKey("corral_state", DaemonState)
