"""Run blocking work (generation, pulls) in a thread and consume its events in asyncio.

The event loop never blocks on NumPy or on a download: the work runs in an
executor of its own (long work must not starve the default executor that
short `to_thread` calls use) and hands each event to the loop through an
asyncio.Queue.
Leaving the iteration early (the client went away, an error, shutdown) sets
the work's cancel Event and waits for the thread to end, so no work outlives
its request.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

T = TypeVar("T")
Emit = Callable[[T], None]

# What a worker thread posts to the event loop: (kind, value) with kind one of these.
ITEM, ERROR, END = range(3)
Posted = tuple[int, Any]


async def posted_events(queue: asyncio.Queue[Posted]) -> AsyncIterator[Any]:
    """The ITEM values posted to `queue`, until END; an ERROR's exception is raised."""
    while True:
        kind, value = await queue.get()
        if kind == ITEM:
            yield value
        elif kind == ERROR:
            raise value
        else:
            return


async def events_from_thread(
    work: Callable[[Emit[T]], Any], cancel: threading.Event, executor: Executor | None = None
) -> AsyncIterator[T]:
    """Yield what `work(emit)` emits from its worker thread, then end when it returns.

    An exception raised by `work` is re-raised here, after the events emitted before it.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Posted] = asyncio.Queue()

    def post(kind: int, value: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

    def run() -> None:
        try:
            work(lambda item: post(ITEM, item))
        except BaseException as e:  # handed to the loop, raised there
            post(ERROR, e)
        else:
            post(END, None)

    thread_done = loop.run_in_executor(executor, run)
    try:
        async for value in posted_events(queue):
            yield value
    finally:
        cancel.set()
        await asyncio.shield(thread_done)
