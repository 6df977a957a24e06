"""Which models are in memory: load once, share, queue, keep for keep_alive, evict.

Loaded models are keyed by blob digest and load options (num_ctx), so two
names for one blob share one copy. A request whose num_ctx is at most a loaded
copy's uses that copy, its window enforced per request; only a larger num_ctx
loads another, which then replaces the smaller copies (they unload once idle), so a
model is loaded once (Ollama reloads on any change of num_ctx). A request holds a model through
`Scheduler.use()`; while any request holds it, it is never evicted. When the
last holder leaves, the latest request's keep_alive decides: 0 unloads now,
a negative value (math.inf here) keeps it forever, anything else arms a timer.

Loads happen one at a time (a FIFO lock) in a worker thread. Before a load,
room is made: while `max_loaded` models are loaded or the new model's
estimated size would pass `max_memory`, idle models are unloaded, least
recently used first; if only busy models are left, the load waits for one to
be released, and new requests for loaded models wait behind it (first come,
first served: a steady stream of requests to the loaded model cannot starve a
request for another one when they must swap). Each model serves
`num_parallel` requests at once (its slots), decoded together by its batch
loop (batcher.py). A request that cannot start at once waits in a queue of at
most `max_queue`; beyond that it is refused with 503. A waiting request that
goes away (its client disconnected) leaves the queue at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import TypeVar

from corral.daemon.batcher import Batcher
from corral.daemon.config import DEFAULT_MAX_QUEUE
from corral.daemon.errors import RequestError
from corral.daemon.memory import Estimate, estimate_model_bytes, fitting_slots, human_size
from corral.daemon.os_limits import release_free_memory
from corral.daemon.slots import Lease, LoadedInfo, LoadedModel, LoadKey, SlotPool
from corral.runtime.engine import Engine
from corral.runtime.gguf import GGUFError

log = logging.getLogger(__name__)

T = TypeVar("T")

Loader = Callable[[Path, int], Engine]
TOO_LARGE = 507  # Insufficient Storage: the model cannot fit in the memory budget
BUSY = 503

__all__ = ["Lease", "LoadedInfo", "Scheduler", "load_engine"]


def load_engine(path: Path, num_ctx: int) -> Engine:
    return Engine.load(path, num_ctx=num_ctx)


class Scheduler:
    def __init__(
        self,
        *,
        default_keep_alive: float,
        max_loaded: int = 1,
        num_parallel: int = 1,
        max_memory: int | None = None,  # bytes; None: no limit
        max_queue: int = DEFAULT_MAX_QUEUE,
        loader: Loader = load_engine,
        estimator: Estimate = estimate_model_bytes,
    ) -> None:
        self.default_keep_alive = default_keep_alive
        self.max_loaded = max_loaded
        self.num_parallel = num_parallel
        self.max_memory = max_memory
        self.max_queue = max_queue
        self._loader = loader
        self._estimator = estimator
        self._loaded: dict[LoadKey, LoadedModel] = {}
        self._load_lock = asyncio.Lock()
        self._released = asyncio.Event()  # replaced by a fresh one at every release
        self._waiting = 0
        self._closing = False
        self._room_wanted = 0  # loads waiting for a busy model to be released
        self._abandoned: set[asyncio.Future[LoadedModel]] = set()  # loads nobody awaits
        self._loading: LoadKey | None = None  # the load holding the load lock
        self._stop_loading = False  # the blob being loaded was stopped meanwhile

    # ----- public -------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def use(
        self,
        path: Path,
        digest: str,
        num_ctx: int,
        keep_alive: float | None = None,
        *,
        name: str = "",
    ) -> AsyncIterator[Lease]:
        """Hold the model for one request: load or reuse it, wait for a slot, run."""
        started = time.perf_counter_ns()
        key = LoadKey(digest, num_ctx)
        with self._queued(key, name or path.name):
            while True:
                model = await self._acquire(key, path, name or path.name, keep_alive)
                try:
                    if self._closing:
                        raise _shutting_down()
                    slot = await model.pool.take()
                    break
                except _Replaced:  # waited on a copy a larger one replaced: go to that one
                    self._release(model)
                except BaseException:
                    self._release(model)
                    raise
        try:
            engine = model.engine.with_num_ctx(num_ctx)
            yield Lease(engine, slot, model.batcher, time.perf_counter_ns() - started)
        finally:
            model.pool.give(slot)
            self._release(model)

    async def preload(
        self,
        path: Path,
        digest: str,
        num_ctx: int,
        keep_alive: float | None = None,
        *,
        name: str = "",
    ) -> int:
        """Load (or keep) a model without generating; returns the time it took in ns."""
        started = time.perf_counter_ns()
        key = LoadKey(digest, num_ctx)
        with self._queued(key, name or path.name, needs_slot=False):
            model = await self._acquire(key, path, name or path.name, keep_alive)
        self._release(model)
        return time.perf_counter_ns() - started

    def unload(self, digest: str) -> None:
        """Unload every copy of a blob now; copies in use when their last request ends.
        A copy being loaded goes once the request that loads it ends."""
        if self._loading is not None and self._loading.digest == digest:
            self._stop_loading = True
        for model in list(self._loaded.values()):
            if model.key.digest == digest:
                model.stale = True
                if model.refs == 0:
                    self._unload(model)

    def loaded(self) -> list[LoadedInfo]:
        """What is in memory, most recently used first (for /api/ps)."""
        models = sorted(self._loaded.values(), key=lambda m: m.last_used, reverse=True)
        return [m.info() for m in models]

    @property
    def waiting(self) -> int:
        """Requests queued: waiting for a load, for room in memory or for a slot."""
        return self._waiting

    def shutdown(self) -> None:
        """Refuse new requests and fail the queued ones (the daemon is stopping)."""
        self._closing = True
        error = _shutting_down()
        for model in self._loaded.values():
            model.pool.fail_waiters(error)
        self._wake()

    async def close(self) -> None:
        """Unload everything (the daemon has stopped serving)."""
        self.shutdown()
        for model in list(self._loaded.values()):
            self._unload(model)

    # ----- the queue ----------------------------------------------------------

    @contextlib.contextmanager
    def _queued(self, key: LoadKey, name: str, needs_slot: bool = True) -> Iterator[None]:
        """Count the request as waiting unless its model is loaded (with a slot free)."""
        if self._closing:
            raise _shutting_down()
        model = self._covering(key)
        ready = model is not None and (model.pool.available or not needs_slot)
        if ready and not self._room_wanted:
            yield
            return
        if self._waiting >= self.max_queue:
            raise RequestError(
                "server busy: the queue of waiting requests is full "
                f"(CORRAL_MAX_QUEUE={self.max_queue}); try again later",
                BUSY,
            )
        self._waiting += 1
        log.info("%s: request queued (%d waiting)", name, self._waiting)
        try:
            yield
        finally:
            self._waiting -= 1

    # ----- loading ------------------------------------------------------------

    async def _acquire(
        self, key: LoadKey, path: Path, name: str, keep_alive: float | None
    ) -> LoadedModel:
        """Hold the model (refs + 1), loading it first if it is not in memory.

        While a load waits for room, requests for loaded models queue behind it, so a
        steady stream of requests to one model cannot starve a request for another."""
        seconds = self.default_keep_alive if keep_alive is None else keep_alive
        while True:
            model = self._covering(key)
            if model is not None and not self._room_wanted:
                model.refs += 1
                model.stale = False  # a request after a stop keeps the model
                return self._take_over(model, name, seconds)
            if model is not None:
                await self._released.wait()
            elif (loaded := await self._load(key, path, name, seconds)) is not None:
                return self._take_over(loaded, name, seconds)

    async def _load(
        self, key: LoadKey, path: Path, name: str, keep_alive: float
    ) -> LoadedModel | None:
        """Load the model, held once, to stay `keep_alive` once idle (the requester's,
        even if it goes away meanwhile); None if another request loaded it meanwhile."""
        await self._load_lock.acquire()  # waiting here (and for room) is cancellable
        self._loading, self._stop_loading = key, False
        job: asyncio.Future[LoadedModel] | None = None
        try:
            if self._closing:
                raise _shutting_down()
            if self._covering(key) is not None:
                return None
            size, slots = await self._size_and_slots(path, key, name)
            await self._make_room(size)
            job = asyncio.ensure_future(
                self._load_then_unlock(key, path, name, (size, slots), keep_alive)
            )
        finally:
            if job is None:
                self._unlock()
        return await self._await_load(job)

    def _retire_smaller(self, key: LoadKey) -> None:
        """Copies of the blob with a smaller window than the one just loaded for `key`
        go (now if idle, else when released): the new copy serves their requests."""
        for model in list(self._loaded.values()):
            if model.key.digest == key.digest and model.key.num_ctx < key.num_ctx:
                model.stale = True
                model.pool.fail_waiters(_Replaced())  # they move to the new copy
                if model.refs == 0:
                    self._unload(model)

    def _covering(self, key: LoadKey) -> LoadedModel | None:
        """The loaded copy of the blob with the smallest context window at least `key`'s,
        one that is staying before one on its way out (stopped, or replaced by a larger)."""
        fitting = [
            m
            for m in self._loaded.values()
            if m.key.digest == key.digest and m.key.num_ctx >= key.num_ctx
        ]
        return min(fitting, key=lambda m: (m.stale, m.key.num_ctx), default=None)

    async def _load_then_unlock(
        self, key: LoadKey, path: Path, name: str, size_slots: tuple[int, int], keep_alive: float
    ) -> LoadedModel:
        """Load in a worker thread; the new model starts held once, for its requester
        (released at once if the requester went away meanwhile)."""
        this = asyncio.current_task()
        size, slots = size_slots
        try:
            log.info("loading %s (num_ctx=%d, about %s)", name, key.num_ctx, human_size(size))
            engine = await _reading(name, self._loader, path, key.num_ctx)
            pool, batcher = SlotPool(slots), Batcher(engine, name)
            model = LoadedModel(key, path, name, engine, size, pool, batcher, keep_alive)
            model.refs = 1
            model.stale = self._stop_loading  # stopped while loading: goes when released
            self._loaded[key] = model
            self._retire_smaller(key)
            if this in self._abandoned:
                self._release(model)
            return model
        finally:
            self._abandoned.discard(this)
            self._unlock()

    def _unlock(self) -> None:
        self._loading, self._stop_loading = None, False
        self._load_lock.release()

    async def _await_load(self, job: asyncio.Future[LoadedModel]) -> LoadedModel:
        """A load thread cannot be stopped: if the request goes away mid-load, the load
        still finishes (holding the lock: loads never overlap) and the model stays for
        the keep_alive its request asked for, ready for the next request."""
        try:
            return await asyncio.shield(job)
        except asyncio.CancelledError:
            if not job.done():
                self._abandoned.add(job)
                job.add_done_callback(_retrieve)
            elif not job.cancelled() and job.exception() is None:
                self._release(job.result())
            raise

    def _take_over(self, model: LoadedModel, name: str, keep_alive: float) -> LoadedModel:
        """The latest request names the model and sets how long it stays once idle."""
        model.name = name
        model.keep_alive = keep_alive
        model.cancel_timer()
        return model

    async def _size_and_slots(self, path: Path, key: LoadKey, name: str) -> tuple[int, int]:
        """The memory a copy needs and how many requests it serves at once:
        CORRAL_NUM_PARALLEL, or fewer when CORRAL_MAX_MEMORY holds only fewer (each
        request's KV cache counts), as Ollama falls back to one."""
        fit = partial(fitting_slots, self._estimator)
        size, slots = await _reading(
            name, fit, path, key.num_ctx, self.num_parallel, self.max_memory
        )
        if not slots:
            raise RequestError(
                f"{name} needs about {human_size(size)} of memory with num_ctx {key.num_ctx}, "
                f"more than CORRAL_MAX_MEMORY allows ({human_size(self.max_memory or 0)}): "
                "raise CORRAL_MAX_MEMORY, or lower num_ctx if the weights fit",
                TOO_LARGE,
            )
        if slots < self.num_parallel:
            log.warning(
                "%s: %d requests at once, not CORRAL_NUM_PARALLEL=%d: CORRAL_MAX_MEMORY "
                "(%s) holds no more with num_ctx %d",
                name, slots, self.num_parallel, human_size(self.max_memory or 0), key.num_ctx,
            )  # fmt: skip
        return size, slots

    async def _make_room(self, size: int) -> None:
        """Unload idle models (least recently used first) until `size` more bytes fit.

        While it waits for a busy model, new requests for loaded models wait too."""
        self._room_wanted += 1
        try:
            while self._crowded(size):
                if self._closing:
                    raise _shutting_down()
                idle = [m for m in self._loaded.values() if m.refs == 0]
                if idle:
                    self._unload(min(idle, key=lambda m: m.last_used))
                    continue
                await self._released.wait()  # a busy model will be released
        finally:
            self._room_wanted -= 1
            self._wake()

    def _crowded(self, size: int) -> bool:
        if len(self._loaded) >= self.max_loaded:
            return True
        used = sum(m.size for m in self._loaded.values())
        return self.max_memory is not None and used + size > self.max_memory

    # ----- releasing ----------------------------------------------------------

    def _release(self, model: LoadedModel) -> None:
        model.refs -= 1
        model.last_used = time.monotonic()
        self._wake()
        if model.refs > 0 or self._loaded.get(model.key) is not model:
            return
        if model.keep_alive <= 0 or model.stale or self._closing:
            self._unload(model)
        elif not math.isinf(model.keep_alive):
            loop = asyncio.get_running_loop()
            model.timer = loop.call_later(model.keep_alive, self._expire, model)
            model.expires_at = time.time() + model.keep_alive

    def _wake(self) -> None:
        self._released.set()
        self._released = asyncio.Event()

    def _expire(self, model: LoadedModel) -> None:
        model.timer = None
        if model.refs == 0 and self._loaded.get(model.key) is model:
            log.info("keep_alive expired for %s", model.name)
            self._unload(model)

    def _unload(self, model: LoadedModel) -> None:
        model.cancel_timer()
        if self._loaded.get(model.key) is model:
            del self._loaded[model.key]
            model.batcher.close()
            log.info("unloaded %s", model.name)
            _in_background(release_free_memory)
        self._wake()


def _in_background(work: Callable[[], object]) -> None:
    """Run `work` on a worker thread when there is an event loop, else now."""
    try:
        asyncio.get_running_loop().run_in_executor(None, work)
    except RuntimeError:
        work()


def _retrieve(job: asyncio.Future[LoadedModel]) -> None:
    """Log the failure of a load whose request went away (nobody else will see it)."""
    if not job.cancelled() and (error := job.exception()) is not None:
        log.warning("a load whose request went away failed: %s", error)


class _Replaced(Exception):
    """A request waiting for a slot of a copy that a larger copy replaced."""


def _shutting_down() -> RequestError:
    return RequestError("corral is shutting down; try again when it is back", BUSY)


async def _reading(name: str, read: Callable[..., T], path: Path, *args: object) -> T:
    """`read(path, *args)` in a worker thread; a blob deleted meanwhile (its last name
    removed while its first request was on its way) is the model not found, a 404."""
    try:
        return await asyncio.to_thread(read, path, *args)
    except GGUFError as e:
        if isinstance(e.__cause__, FileNotFoundError):
            raise RequestError(
                f"model '{name}' was deleted while it was being loaded", 404
            ) from None
        raise
