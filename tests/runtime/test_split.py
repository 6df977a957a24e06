"""runtime/split.py: batched products half in a forked helper process — same answers,
and a helper that lives exactly as long as its model, whatever happens to either side."""

from __future__ import annotations

import os
import platform
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from corral.runtime.arch.ops import linear
from corral.runtime.compute_guard import COMPUTE
from corral.runtime.engine import SPLIT_MACHINES, Done, Engine
from corral.runtime.kv_cache import KVCache, KVPool
from corral.runtime.pages import MAPPED_BYTES, weight_array
from corral.runtime.sampling import SamplerOptions
from corral.runtime.split import SPLIT_ROWS, SplitLinear
from corral.runtime.split_protocol import block_rows, stacked_matmul
from tiny import write_tiny_llama

pytestmark = pytest.mark.skipif(
    platform.machine().lower() not in SPLIT_MACHINES, reason="the split runs on x86-64 only"
)

# (out, in): a block-aligned matrix, ones with a tail, a tiny one, the widest input
SHAPES = [(600, 64), (601, 96), (3, 40), (2, 1536), (1201, 17)]
BIG = (MAPPED_BYTES // 4 // 64, 64)  # a weight in a mapping of its own (runtime/pages.py)


@pytest.fixture
def matrices() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal(shape, dtype=np.float32) for shape in SHAPES]


@pytest.fixture
def split(matrices: list[np.ndarray]) -> Iterator[SplitLinear]:
    s = SplitLinear(matrices)
    yield s
    s.close()


def gone(pid: int, seconds: float = 5.0) -> bool:
    """Whether process `pid` has exited (and been reaped) within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists() or "Z" in _state(pid):
            return True
        time.sleep(0.01)
    return False


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return "Z"


@pytest.mark.parametrize("n_rows", list(SPLIT_ROWS))
def test_split_products_equal_local_ones(
    split: SplitLinear, matrices: list[np.ndarray], n_rows: int
) -> None:
    rng = np.random.default_rng(n_rows)
    before = split.jobs_done
    for w in matrices:
        x = rng.standard_normal((n_rows, w.shape[1]), dtype=np.float32)
        np.testing.assert_allclose(split.linear(x, w), linear(x, w), rtol=1e-5, atol=1e-4)
    assert split.jobs_done == before + len(matrices)  # the helper computed its half of each


def test_other_rows_and_weights_stay_local(split: SplitLinear, matrices: list[np.ndarray]) -> None:
    w = matrices[0]
    x1 = np.ones((1, w.shape[1]), dtype=np.float32)
    x9 = np.ones((9, w.shape[1]), dtype=np.float32)
    copy = w.copy()  # equal values, but not one of the helper's matrices
    x4 = np.ones((4, w.shape[1]), dtype=np.float32)
    before = split.jobs_done
    for x, weight in ((x1, w), (x9, w), (x4, copy)):
        np.testing.assert_allclose(split.linear(x, weight), linear(x, weight), rtol=1e-5)
    assert split.jobs_done == before


def test_stacked_matmul_covers_whole_blocks_and_the_tail() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 32), dtype=np.float32)
    w = rng.standard_normal((block_rows(4, 32) * 3 + 7, 32), dtype=np.float32)
    out = np.full((4, w.shape[0]), np.nan, dtype=np.float32)
    stacked_matmul(x, w, out)
    np.testing.assert_allclose(out, x @ w.T, rtol=1e-5, atol=1e-5)


def test_helper_holds_none_of_the_parents_sockets(matrices: list[np.ndarray]) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        s = SplitLinear(matrices)
        try:
            w = matrices[0]
            s.linear(np.ones((2, w.shape[1]), dtype=np.float32), w)  # it is past its set-up
            assert s.jobs_done == 1
            inode = os.stat(listener.fileno()).st_ino
            helper_fds = list(Path(f"/proc/{s.pid}/fd").iterdir())
            links = {os.readlink(fd) for fd in helper_fds}
            assert f"socket:[{inode}]" not in links
            assert len(helper_fds) <= 4  # stdio and the wake-up pipe
            assert Path(f"/proc/{s.pid}/comm").read_text().strip() == "corral-split"
        finally:
            s.close()


def test_close_and_garbage_collection_stop_the_helper(matrices: list[np.ndarray]) -> None:
    s = SplitLinear(matrices)
    pid = s.pid
    s.close()
    assert gone(pid)
    s = SplitLinear(matrices)
    pid = s.pid
    del s
    assert gone(pid)


@pytest.mark.parametrize("signal_number", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_helper_leaves_products_local_and_right(
    split: SplitLinear,
    matrices: list[np.ndarray],
    caplog: pytest.LogCaptureFixture,
    signal_number: int,
) -> None:
    w = matrices[1]
    x = np.random.default_rng(2).standard_normal((4, w.shape[1]), dtype=np.float32)
    split.linear(x, w)
    os.kill(split.pid, signal_number)
    for _ in range(3):
        np.testing.assert_allclose(split.linear(x, w), linear(x, w), rtol=1e-5, atol=1e-4)
    assert "helper" in caplog.text and "gone" in caplog.text


def test_the_helper_exits_when_its_process_dies(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import os, sys, numpy as np
        from corral.runtime.split import SplitLinear
        s = SplitLinear([np.ones((64, 8), dtype=np.float32)])
        s.linear(np.ones((2, 8), dtype=np.float32), s._matrices[0])
        print(s.pid, flush=True)
        os._exit(0)  # no finalizers: the helper must notice by itself
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    helper = int(out.stdout.split()[0])
    assert gone(helper)


def test_forking_waits_for_products_running_in_other_threads() -> None:
    """OpenBLAS stops its thread pool at fork(); a threaded product under way in another
    thread would never return (without the guard this thread hangs at once)."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((2048, 1024), dtype=np.float32)
    x = rng.standard_normal((32, 1024), dtype=np.float32)
    expected = x @ w.T
    done, stop = [], threading.Event()

    def compute() -> None:
        while not stop.is_set():
            with COMPUTE.shared():  # as Llama.run_layers and Llama.logits hold it
                done.append(np.allclose(x @ w.T, expected, rtol=1e-4, atol=1e-3))

    worker = threading.Thread(target=compute, daemon=True)
    worker.start()
    while not done:
        time.sleep(0.01)
    small = [np.ones((64, 8), dtype=np.float32)]
    for _ in range(20):
        SplitLinear(small).close()
    stop.set()
    worker.join(timeout=30)
    assert not worker.is_alive()
    assert len(done) > 1 and all(done)


def mapped_in(pid: int, address: int) -> bool:
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        start, end = (int(a, 16) for a in line.split()[0].split("-"))
        if start <= address < end:
            return True
    return False


def test_the_helper_does_not_inherit_kv_caches(matrices: list[np.ndarray]) -> None:
    """Pages of a cache written after the fork would otherwise stay twice in memory."""
    pool = KVPool(n_layers=2, n_kv_heads=2, n_ctx=4096, head_dim=64, n_slots=2)
    cache = KVCache(n_layers=2, n_kv_heads=2, n_ctx=4096, head_dim=64)
    s = SplitLinear(matrices)
    try:
        w = matrices[0]
        s.linear(np.ones((2, w.shape[1]), dtype=np.float32), w)  # it is up and running
        for array in (pool.keys, pool.values, cache.keys, cache.values):
            assert mapped_in(os.getpid(), array.ctypes.data)
            assert not mapped_in(s.pid, array.ctypes.data)
        assert mapped_in(s.pid, w.ctypes.data)  # the weights it needs, it shares
    finally:
        s.close()


def test_a_helper_inherits_its_own_weights_and_no_other_models() -> None:
    """A helper forked while another model is loaded must not keep that model's weights:
    once it is unloaded they would stay in memory until the helper ends."""
    other = weight_array(BIG)  # a model loaded before, or after
    other[...] = 1.0
    own = [weight_array(BIG)]
    own[0][...] = np.random.default_rng(4).standard_normal(BIG, dtype=np.float32)
    first, second = SplitLinear(own), SplitLinear([other])
    try:
        x = np.ones((2, BIG[1]), dtype=np.float32)
        np.testing.assert_allclose(first.linear(x, own[0]), linear(x, own[0]), rtol=1e-5, atol=1e-4)
        assert first.jobs_done == 1  # the helper computed with the weights it inherited
        assert mapped_in(first.pid, own[0].ctypes.data)
        assert not mapped_in(first.pid, other.ctypes.data)
        assert not mapped_in(second.pid, own[0].ctypes.data)  # lent for its own fork only
    finally:
        first.close()
        second.close()


def test_a_model_loads_when_no_helper_can_be_forked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """fork() failing (no more processes or memory) costs speed, never the model."""

    def no_fork() -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", no_fork)
    fds_before = set(os.listdir("/proc/self/fd"))
    engine = Engine.load(write_tiny_llama(tmp_path / "m.gguf"), split=True)
    assert engine.model.linear is linear
    assert "cannot start a helper" in caplog.text
    assert set(os.listdir("/proc/self/fd")) == fds_before  # the pipe is closed again
    events = list(engine.generate(engine.new_session(), [1, 2, 3], SamplerOptions.greedy(), 4))
    assert isinstance(events[-1], Done)


def test_an_idle_helper_sleeps_and_wakes_for_the_next_product(split: SplitLinear) -> None:
    w = split._matrices[0]
    x = np.ones((3, w.shape[1]), dtype=np.float32)
    split.linear(x, w)
    deadline = time.monotonic() + 5
    while _state(split.pid) != "S" and time.monotonic() < deadline:  # spins ~2 ms first
        time.sleep(0.01)
    assert _state(split.pid) == "S"
    cpu_before = _cpu_ticks(split.pid)
    time.sleep(0.3)
    assert _cpu_ticks(split.pid) - cpu_before <= 2  # asleep, not spinning
    jobs = split.jobs_done
    np.testing.assert_allclose(split.linear(x, w), linear(x, w), rtol=1e-5, atol=1e-4)
    assert split.jobs_done == jobs + 1


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime
