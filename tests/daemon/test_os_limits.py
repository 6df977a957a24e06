"""The daemon's defences against piling-up clients: the open files limit, a log that
holds back a repeated error, and memory given back after a model is unloaded."""

from __future__ import annotations

import logging
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from corral.daemon.os_limits import (
    ThrottleRepeats,
    _malloc_trim,
    release_free_memory,
    resident_mb,
)
from serving import Daemon
from tiny import write_tiny_llama


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


@pytest.mark.skipif(_malloc_trim() is None, reason="malloc_trim is glibc's")
def test_free_memory_left_in_a_threads_arena_goes_back_to_the_system() -> None:
    """A worker thread's many small buffers, freed but for one in a hundred, stay resident
    (the kept ones pin the arena's pages) until malloc_trim hands the free pages back."""

    def work() -> list[np.ndarray]:
        buffers = [np.ones(2000) for _ in range(20_000)]  # 16 KB each: 320 MB from the arena
        return buffers[::100]

    kept: list[list[np.ndarray]] = []
    thread = threading.Thread(target=lambda: kept.append(work()))
    thread.start()
    thread.join()
    before = resident_mb()
    released = release_free_memory()
    assert released is not None and released > 200
    assert resident_mb() < before - 200
    assert len(kept[0]) == 200


def test_unloading_a_model_releases_free_memory(tmp_path: Path) -> None:
    with Daemon.start_in(tmp_path / "home") as daemon:
        daemon.client.pull(str(write_tiny_llama(tmp_path / "tiny.gguf")), stream=False)
        daemon.client.generate("tiny", "", stream=False)  # load it
        daemon.client.generate("tiny", "", keep_alive=0, stream=False)  # unload it
        daemon.wait_for_log("unloaded tiny")
        daemon.wait_for_log("released free memory: resident ")
