"""A loaded model's slots: the CORRAL_NUM_PARALLEL places where its requests run.

Each slot owns one Session (a KV cache and the tokens in it), created on first
use and kept, so a conversation's next turn reuses its cache. The slots' caches
share one pool, so the batch loop attends for all busy slots at once. The most
recently freed slot is handed out first. Waiting requests get slots in
arrival order (a freed slot goes straight to the first waiter, never to a
newcomer). The model's batch loop (batcher.py) steps the sessions of the busy
slots together, one batch row per running request.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from corral.daemon.batcher import Batcher
from corral.runtime.engine import Engine, Session


@dataclass(eq=False)
class Slot:
    index: int
    n_slots: int = 1
    # Every slot's session once the first is asked for: one KV pool for the model.
    pool_sessions: list[Session] = field(default_factory=list)

    @property
    def session(self) -> Session | None:
        return self.pool_sessions[self.index] if self.pool_sessions else None

    def session_for(self, engine: Engine) -> Session:
        if not self.pool_sessions:
            self.pool_sessions.extend(engine.new_sessions(self.n_slots))
        return self.pool_sessions[self.index]


class SlotPool:
    """Hands out slots first come, first served; a cancelled waiter leaves the line at once."""

    def __init__(self, size: int) -> None:
        sessions: list[Session] = []  # filled by the first slot to need its session
        self.slots = tuple(Slot(i, size, sessions) for i in range(size))
        self._free = list(self.slots)  # a stack: the last freed slot is reused first
        self._waiters: deque[asyncio.Future[Slot]] = deque()

    @property
    def waiting(self) -> int:
        return sum(not w.done() for w in self._waiters)

    @property
    def available(self) -> bool:
        """A request arriving now would get a slot without waiting."""
        return bool(self._free) and not self.waiting

    def busy(self) -> list[Slot]:
        return [s for s in self.slots if s not in self._free]

    def try_take(self) -> Slot | None:
        """A free slot if one is there and nobody waits before us."""
        if self.available:
            return self._free.pop()
        return None

    async def take(self) -> Slot:
        if (slot := self.try_take()) is not None:
            return slot
        waiter: asyncio.Future[Slot] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.give(waiter.result())  # handed over just as we were cancelled
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def give(self, slot: Slot) -> None:
        """Return a slot: to the first waiter still waiting, else to the free stack."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(slot)
                return
        self._free.append(slot)

    def fail_waiters(self, error: BaseException) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)


@dataclass(frozen=True)
class LoadKey:
    """Loaded models are keyed by blob and load options: two names of one blob share a copy."""

    digest: str
    num_ctx: int


@dataclass(frozen=True)
class LoadedInfo:
    """What /api/ps shows about one loaded model."""

    name: str  # the name it was last requested by
    digest: str
    path: Path
    num_ctx: int
    size: int  # bytes in memory: float32 weights + one KV cache per slot
    expires_at: datetime | None  # None: kept until unloaded (a negative keep_alive)
    in_use: int  # requests holding it: running or waiting for a slot
    stopping: bool  # unloads as soon as its last request ends (stopped or deleted)


@dataclass(eq=False)
class LoadedModel:
    key: LoadKey
    path: Path
    name: str
    engine: Engine
    size: int
    pool: SlotPool
    batcher: Batcher
    keep_alive: float  # seconds once idle, from the latest request; math.inf: forever
    refs: int = 0
    last_used: float = field(default_factory=time.monotonic)
    expires_at: float | None = None  # wall-clock seconds while idle with a timer
    timer: asyncio.TimerHandle | None = None
    stale: bool = False  # unload when the last user leaves (stopped, or its model deleted)

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.expires_at = None

    def info(self) -> LoadedInfo:
        if self.expires_at is not None:
            expires = self.expires_at
        elif self.keep_alive == float("inf"):
            expires = None
        else:  # in use: at least until keep_alive after now
            expires = time.time() + self.keep_alive
        return LoadedInfo(
            name=self.name,
            digest=self.key.digest,
            path=self.path,
            num_ctx=self.engine.num_ctx,
            size=self.size,
            expires_at=None if expires is None else _utc(expires),
            in_use=self.refs,
            stopping=self.stale,
        )


@dataclass(frozen=True)
class Lease:
    """What a request holds while it generates: the engine (with the request's context
    window, which may be smaller than the loaded copy's), its slot, the model's batch
    loop, the load time."""

    engine: Engine
    slot: Slot
    batcher: Batcher
    load_duration_ns: int

    @property
    def session(self) -> Session:
        return self.slot.session_for(self.batcher.engine)  # sized for the loaded copy


def _utc(seconds: float) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)
