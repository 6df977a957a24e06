"""What keeps a long-running daemon standing when clients pile up: enough file
descriptors, a log that does not drown in one repeated error, and memory given back
once a model is unloaded.

Every connection costs a descriptor, and many systems give a process a soft limit of
1024 (systemd's default) under a much higher hard one, so the daemon raises its soft
limit to the hard one at startup, as Go programs (and so Ollama) do. When descriptors
do run out, asyncio and aiohttp log every failed accept with its traceback, hundreds
of thousands of times a minute; `ThrottleRepeats` lets the first through and then one
summary line per interval.

glibc keeps the memory freed in each thread's malloc arena for reuse: after a few
hours of requests on worker threads, a daemon with nothing loaded held 250-290 MB
against 62 MB at start. `release_free_memory` (malloc_trim) hands it back to the
system when a model is unloaded.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import resource
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

UNLIMITED_FILES = 1 << 20  # the soft limit used when the hard one is "unlimited"
REPEAT_INTERVAL = 10.0  # seconds between two logs of the same repeated error
MAX_REMEMBERED = 1000  # distinct records remembered before the old ones are forgotten


def raise_open_files_limit() -> int:
    """Raise the soft limit of open files to the hard one; returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = UNLIMITED_FILES if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as e:
            log.warning("cannot raise the open files limit from %d to %d: %s", soft, wanted, e)
    return soft


class ThrottleRepeats(logging.Filter):
    """Pass a warning or error unless the same one (logger, message, exception type)
    passed less than `interval` seconds ago; the next one through says how many were
    held back. Lower levels always pass (a request's lines repeat by nature)."""

    def __init__(self, interval: float = REPEAT_INTERVAL) -> None:
        super().__init__()
        self.interval = interval
        self._last: dict[tuple[str, str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        exc = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else ""
        key = (record.name, record.getMessage(), exc)
        now = time.monotonic()
        last, held = self._last.get(key, (-self.interval, 0))
        if now - last < self.interval:
            self._last[key] = (last, held + 1)
            return False
        if len(self._last) > MAX_REMEMBERED:  # forget what has not repeated lately
            self._last = {k: v for k, v in self._last.items() if now - v[0] < self.interval}
        self._last[key] = (now, 0)
        if held:
            record.msg, record.args = f"{key[1]} (and {held} more like it in {now - last:.0f}s)", ()
        return True


def release_free_memory() -> int | None:
    """Give the free memory of every malloc arena back to the system (glibc's
    malloc_trim); the resident size in MB before and after is logged. Returns the MB
    given back, or None where there is no malloc_trim (not glibc)."""
    trim = _malloc_trim()
    if trim is None:
        return None
    before = resident_mb()
    trim(0)
    after = resident_mb()
    log.info("released free memory: resident %d MB -> %d MB", before, after)
    return before - after


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


def resident_mb() -> int:
    """This process's resident memory in MB (0 where /proc is not there)."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * resource.getpagesize() >> 20
