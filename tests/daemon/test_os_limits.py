"""The daemon's defences against piling-up clients: the open files limit and a log that
holds back a repeated error."""

from __future__ import annotations

import logging
import resource
import subprocess
import sys
import time

from corral.daemon.os_limits import ThrottleRepeats


def test_the_soft_open_files_limit_is_raised_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(soft, 256)
    code = (
        "import resource\n"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({low}, {hard}))\n"
        "from corral.daemon.os_limits import raise_open_files_limit\n"
        "print(raise_open_files_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    now, in_force = map(int, out.stdout.split())
    assert now == in_force > low or hard == low


def record(msg: str, exc: type[BaseException] | None = None) -> logging.LogRecord:
    info = (exc, exc(), None) if exc else None
    return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, msg, None, info)


def test_a_repeated_error_is_logged_once_an_interval_with_a_count() -> None:
    throttle = ThrottleRepeats(interval=0.2)
    passed = [throttle.filter(record("accept failed", OSError)) for _ in range(1000)]
    assert passed.count(True) == 1
    assert throttle.filter(record("accept failed", ValueError))  # another error: its own
    assert throttle.filter(record("something else", OSError))
    info = record("a request's line")
    info.levelno = logging.INFO
    assert all(throttle.filter(info) for _ in range(3))  # only warnings and errors are held
    time.sleep(0.25)
    later = record("accept failed", OSError)
    assert throttle.filter(later) and "(and 999 more like it in " in later.msg
