"""Which models are in memory: load once, share, keep for keep_alive, evict.

Loaded models are keyed by blob digest and load options (num_ctx), so two
names for one blob share one copy. A request holds a model through
`Scheduler.use()`; while any request holds it, it is never evicted. When the
last holder leaves, the request's keep_alive decides: 0 unloads now, a
negative value (math.inf here) keeps it forever, anything else arms a timer.

One load at a time (a lock, FIFO). Loading runs in a worker thread. At most
`max_loaded` models stay loaded: to make room, idle models are evicted
(least recently used first); if every loaded model is busy, the load waits
until one is released. Each model serves `num_parallel` requests at once
(a semaphore) and keeps an idle Session per slot so a conversation's next
turn reuses its KV cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from corral.runtime.engine import Engine, Session

log = logging.getLogger(__name__)

Loader = Callable[[Path, int], Engine]


def load_engine(path: Path, num_ctx: int) -> Engine:
    return Engine.load(path, num_ctx=num_ctx)


@dataclass(frozen=True)
class LoadKey:
    digest: str
    num_ctx: int


@dataclass(eq=False)
class LoadedModel:
    key: LoadKey
    path: Path
    engine: Engine
    slots: asyncio.Semaphore
    idle_sessions: list[Session] = field(default_factory=list)
    refs: int = 0
    last_used: float = field(default_factory=time.monotonic)
    expires_at: float | None = None  # wall-clock seconds; None while in use or forever
    timer: asyncio.TimerHandle | None = None
    stale: bool = False  # its model was deleted: unload when the last user leaves

    def take_session(self) -> Session:
        return self.idle_sessions.pop() if self.idle_sessions else self.engine.new_session()

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.expires_at = None


@dataclass(frozen=True)
class Lease:
    """What a request holds while it generates: the engine, a session, the load time."""

    engine: Engine
    session: Session
    load_duration_ns: int


class Scheduler:
    def __init__(
        self,
        *,
        default_keep_alive: float,
        max_loaded: int = 1,
        num_parallel: int = 1,
        loader: Loader = load_engine,
    ) -> None:
        self.default_keep_alive = default_keep_alive
        self.max_loaded = max_loaded
        self.num_parallel = num_parallel
        self._loader = loader
        self._loaded: dict[LoadKey, LoadedModel] = {}
        self._load_lock = asyncio.Lock()
        self._released = asyncio.Event()

    # ----- public -------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def use(
        self, path: Path, digest: str, num_ctx: int, keep_alive: float | None = None
    ) -> AsyncIterator[Lease]:
        """Hold the model for one request: load or reuse it, take a slot and a session."""
        started = time.perf_counter_ns()
        model = await self._acquire(LoadKey(digest, num_ctx), path)
        try:
            load_ns = time.perf_counter_ns() - started
            async with model.slots:
                session = model.take_session()
                try:
                    yield Lease(model.engine, session, load_ns)
                finally:
                    model.idle_sessions.append(session)
        finally:
            self._release(model, keep_alive)

    async def preload(
        self, path: Path, digest: str, num_ctx: int, keep_alive: float | None = None
    ) -> int:
        """Load (or keep) a model without generating; returns the load time in ns."""
        started = time.perf_counter_ns()
        model = await self._acquire(LoadKey(digest, num_ctx), path)
        self._release(model, keep_alive)
        return time.perf_counter_ns() - started

    def unload(self, digest: str) -> None:
        """Unload every copy of a blob (its model was deleted); busy ones when released."""
        for model in list(self._loaded.values()):
            if model.key.digest == digest:
                model.stale = True
                if model.refs == 0:
                    self._unload(model)

    def loaded(self) -> list[LoadedModel]:
        return list(self._loaded.values())

    async def close(self) -> None:
        """Unload everything (the daemon is stopping)."""
        for model in list(self._loaded.values()):
            self._unload(model)

    # ----- internals ----------------------------------------------------------

    async def _acquire(self, key: LoadKey, path: Path) -> LoadedModel:
        """Reserve the model (loading it if needed) in a task the request cannot cancel.

        A load thread cannot be stopped; if the request goes away mid-load,
        the load still finishes under the lock (loads never overlap) and the
        model stays for keep_alive, ready for the next request.
        """
        job = asyncio.ensure_future(self._reserve(key, path))
        try:
            return await asyncio.shield(job)
        except asyncio.CancelledError:
            job.add_done_callback(self._release_abandoned)
            raise

    def _release_abandoned(self, job: asyncio.Future[LoadedModel]) -> None:
        if not job.cancelled() and job.exception() is None:
            self._release(job.result(), None)

    async def _reserve(self, key: LoadKey, path: Path) -> LoadedModel:
        async with self._load_lock:
            model = self._loaded.get(key)
            if model is None:
                await self._make_room()
                log.info("loading %s (num_ctx=%d)", path, key.num_ctx)
                engine = await asyncio.to_thread(self._loader, path, key.num_ctx)
                model = LoadedModel(key, path, engine, asyncio.Semaphore(self.num_parallel))
                self._loaded[key] = model
            model.refs += 1
            model.cancel_timer()
            return model

    async def _make_room(self) -> None:
        while len(self._loaded) >= self.max_loaded:
            idle = [m for m in self._loaded.values() if m.refs == 0]
            if idle:
                self._unload(min(idle, key=lambda m: m.last_used))
                continue
            released = self._released  # set by the next release
            await released.wait()

    def _release(self, model: LoadedModel, keep_alive: float | None) -> None:
        model.refs -= 1
        model.last_used = time.monotonic()
        self._released.set()
        self._released = asyncio.Event()
        if model.refs > 0 or self._loaded.get(model.key) is not model:
            return
        seconds = self.default_keep_alive if keep_alive is None else keep_alive
        if seconds <= 0 or model.stale:
            self._unload(model)
        elif not math.isinf(seconds):
            loop = asyncio.get_running_loop()
            model.timer = loop.call_later(seconds, self._expire, model)
            model.expires_at = time.time() + seconds

    def _expire(self, model: LoadedModel) -> None:
        model.timer = None
        if model.refs == 0 and self._loaded.get(model.key) is model:
            log.info("keep_alive expired for %s", model.path)
            self._unload(model)

    def _unload(self, model: LoadedModel) -> None:
        model.cancel_timer()
        if self._loaded.get(model.key) is model:
            del self._loaded[model.key]
            log.info("unloaded %s", model.path)
        model.idle_sessions.clear()
