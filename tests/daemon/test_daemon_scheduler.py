"""The scheduler in-process, loading real tiny GGUF files with the real engine."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from corral.daemon.scheduler import Scheduler, load_engine
from corral.runtime.engine import Engine
from tiny import write_tiny_llama

NUM_CTX = 64
FOREVER = math.inf


class RecordingLoader:
    """The real loader, recording calls and how many run at once; can be held at a gate."""

    def __init__(self) -> None:
        self.calls: list[Path] = []
        self.active = 0
        self.most_active = 0
        self.gate = threading.Event()
        self.gate.set()
        self._lock = threading.Lock()

    def __call__(self, path: Path, num_ctx: int) -> Engine:
        with self._lock:
            self.calls.append(path)
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        try:
            self.gate.wait(30)
            return load_engine(path, num_ctx)
        finally:
            with self._lock:
                self.active -= 1


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("sched")
    return write_tiny_llama(folder / "a.gguf"), write_tiny_llama(folder / "b.gguf", seed=1)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 60))


def scheduler(loader: RecordingLoader, **kw: object) -> Scheduler:
    return Scheduler(default_keep_alive=FOREVER, loader=loader, **kw)  # type: ignore[arg-type]


def digests(s: Scheduler) -> set[str]:
    return {m.digest for m in s.loaded()}


async def eventually(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.01)


def test_a_model_is_loaded_once_and_reused_with_its_session(models: tuple[Path, Path]) -> None:
    a, _ = models
    loader = RecordingLoader()

    async def test() -> None:
        s = scheduler(loader)
        async with s.use(a, "A", NUM_CTX) as first:
            pass
        async with s.use(a, "A", NUM_CTX) as second:
            assert second.engine.model is first.engine.model
            assert second.session is first.session  # the conversation's KV cache is kept
        assert loader.calls == [a]
        async with s.use(a, "A", NUM_CTX * 2) as larger:  # a larger window: another copy
            assert larger.engine.model is not first.engine.model
        assert len(loader.calls) == 2
        assert [m.num_ctx for m in s.loaded()] == [NUM_CTX * 2]  # which replaced the first
        async with s.use(a, "A", NUM_CTX) as smaller:
            assert smaller.engine.model is larger.engine.model

    run(test)


def test_a_smaller_window_uses_a_loaded_copy_with_a_larger_one(models: tuple[Path, Path]) -> None:
    a, _ = models
    loader = RecordingLoader()

    async def test() -> None:
        s = scheduler(loader)
        async with s.use(a, "A", NUM_CTX) as loaded:
            pass
        async with s.use(a, "A", NUM_CTX // 4) as smaller:
            assert smaller.engine.model is loaded.engine.model
            assert smaller.engine.num_ctx == NUM_CTX // 4  # what its prompt must fit
            assert smaller.session.n_ctx == NUM_CTX  # the loaded copy's cache
        assert loader.calls == [a]
        assert [m.num_ctx for m in s.loaded()] == [NUM_CTX]

    run(test)


def test_a_busy_smaller_copy_goes_when_its_request_ends(models: tuple[Path, Path]) -> None:
    a, _ = models

    async def test() -> None:
        s = scheduler(RecordingLoader(), max_loaded=2)
        async with s.use(a, "A", NUM_CTX):
            async with s.use(a, "A", NUM_CTX * 2):
                stopping = {m.num_ctx: m.stopping for m in s.loaded()}
                assert stopping == {NUM_CTX: True, NUM_CTX * 2: False}
            assert len(s.loaded()) == 2  # still answering its request
        assert [m.num_ctx for m in s.loaded()] == [NUM_CTX * 2]

    run(test)


def test_a_request_waiting_on_a_replaced_copy_moves_to_the_new_one(
    models: tuple[Path, Path],
) -> None:
    a, _ = models

    async def test() -> None:
        s = scheduler(RecordingLoader(), max_loaded=2)  # one slot a copy

        async def model_used() -> object:
            async with s.use(a, "A", NUM_CTX) as lease:
                return lease.engine.model

        async with s.use(a, "A", NUM_CTX) as small:  # holds the small copy's slot
            waiting = asyncio.ensure_future(model_used())
            await eventually(lambda: s.waiting == 1)
            async with s.use(a, "A", NUM_CTX * 2) as larger:
                pass  # loaded: it replaces the small copy, whose waiter comes over
            assert await waiting is larger.engine.model is not small.engine.model

    run(test)


def test_keep_alive_zero_unloads_when_released(models: tuple[Path, Path]) -> None:
    a, _ = models

    async def test() -> None:
        s = scheduler(RecordingLoader())
        async with s.use(a, "A", NUM_CTX, keep_alive=0):
            assert digests(s) == {"A"}
        assert digests(s) == set()

    run(test)


def test_keep_alive_timer_unloads_an_idle_model(models: tuple[Path, Path]) -> None:
    a, _ = models

    async def test() -> None:
        s = scheduler(RecordingLoader())
        async with s.use(a, "A", NUM_CTX, keep_alive=0.05):
            pass
        (model,) = s.loaded()
        assert model.expires_at is not None
        await eventually(lambda: not s.loaded())

    run(test)


def test_a_negative_keep_alive_keeps_the_model(models: tuple[Path, Path]) -> None:
    a, _ = models

    async def test() -> None:
        s = Scheduler(default_keep_alive=0.0, loader=RecordingLoader())
        async with s.use(a, "A", NUM_CTX, keep_alive=FOREVER):
            pass
        await asyncio.sleep(0.05)
        (model,) = s.loaded()
        assert model.expires_at is None

    run(test)


def test_another_model_swaps_out_the_idle_one(models: tuple[Path, Path]) -> None:
    a, b = models

    async def test() -> None:
        s = scheduler(RecordingLoader(), max_loaded=1)
        async with s.use(a, "A", NUM_CTX):
            pass
        async with s.use(b, "B", NUM_CTX):
            assert digests(s) == {"B"}

    run(test)


def test_a_busy_model_is_not_evicted_the_next_load_waits(models: tuple[Path, Path]) -> None:
    a, b = models
    loader = RecordingLoader()

    async def test() -> None:
        s = scheduler(loader, max_loaded=1)
        events: list[str] = []

        async def use_b() -> None:
            async with s.use(b, "B", NUM_CTX):
                events.append("B loaded")

        async with s.use(a, "A", NUM_CTX):
            waiting = asyncio.create_task(use_b())
            await asyncio.sleep(0.1)
            assert digests(s) == {"A"} and not events
            events.append("A released")
        await waiting
        assert events == ["A released", "B loaded"]
        assert digests(s) == {"B"}

    run(test)


def test_loads_never_overlap(models: tuple[Path, Path]) -> None:
    a, b = models
    loader = RecordingLoader()

    async def test() -> None:
        s = scheduler(loader, max_loaded=2)

        async def use(path: Path, digest: str) -> None:
            async with s.use(path, digest, NUM_CTX):
                pass

        await asyncio.gather(use(a, "A"), use(b, "B"), use(a, "A"))
        assert loader.most_active == 1
        assert sorted(p.name for p in loader.calls) == ["a.gguf", "b.gguf"]

    run(test)


def test_one_request_at_a_time_per_model(models: tuple[Path, Path]) -> None:
    a, _ = models

    async def test() -> None:
        s = scheduler(RecordingLoader(), num_parallel=1)
        inside = 0
        most = 0

        async def use() -> None:
            nonlocal inside, most
            async with s.use(a, "A", NUM_CTX):
                inside += 1
                most = max(most, inside)
                await asyncio.sleep(0.02)
                inside -= 1

        await asyncio.gather(*(use() for _ in range(4)))
        assert most == 1

    run(test)


def test_a_request_cancelled_mid_load_leaves_the_model_loaded(models: tuple[Path, Path]) -> None:
    a, _ = models
    loader = RecordingLoader()

    async def test() -> None:
        s = scheduler(loader)
        loader.gate.clear()

        async def use() -> None:
            async with s.use(a, "A", NUM_CTX):
                raise AssertionError("the cancelled request must not get the model")

        task = asyncio.create_task(use())
        await eventually(lambda: loader.active == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        loader.gate.set()
        await eventually(lambda: bool(s.loaded()))
        (model,) = s.loaded()
        assert model.in_use == 0
        async with s.use(a, "A", NUM_CTX):  # the next request reuses it
            pass
        assert loader.calls == [a]

    run(test)


def test_unloading_a_busy_blob_waits_for_its_release(models: tuple[Path, Path]) -> None:
    a, _ = models

    async def test() -> None:
        s = scheduler(RecordingLoader())
        async with s.use(a, "A", NUM_CTX):
            s.unload("A")
            assert digests(s) == {"A"}
        assert digests(s) == set()

    run(test)


def test_close_unloads_everything(models: tuple[Path, Path]) -> None:
    a, b = models

    async def test() -> None:
        s = scheduler(RecordingLoader(), max_loaded=2)
        for path, digest in ((a, "A"), (b, "B")):
            async with s.use(path, digest, NUM_CTX, keep_alive=10):
                pass
        await s.close()
        assert s.loaded() == []

    run(test)


def test_a_steady_stream_to_the_loaded_model_does_not_starve_another(
    models: tuple[Path, Path],
) -> None:
    a, b = models
    loader = RecordingLoader()

    async def test() -> None:
        s = scheduler(loader, max_loaded=1, num_parallel=4)
        order: list[str] = []

        async def use(path: Path, digest: str, label: str, hold: float) -> None:
            async with s.use(path, digest, NUM_CTX):
                order.append(label)
                await asyncio.sleep(hold)

        async def stream() -> None:  # each request to A starts before the previous ends
            tasks = []
            for i in range(10):
                tasks.append(asyncio.create_task(use(a, "A", f"A{i}", 0.05)))
                await asyncio.sleep(0.02)
            await asyncio.gather(*tasks)

        streaming = asyncio.create_task(stream())
        await eventually(lambda: "A1" in order)  # A is loaded and never idle from now on
        await use(b, "B", "B", 0)
        await streaming
        assert order[-1] != "B", order  # B did not wait for the stream to dry up
        assert [p.name for p in loader.calls] == ["a.gguf", "b.gguf", "a.gguf"]

    run(test)


def test_a_blob_stopped_while_it_loads_goes_when_its_request_ends(
    models: tuple[Path, Path],
) -> None:
    a, _ = models
    loader = RecordingLoader()

    async def test() -> None:
        s = scheduler(loader)
        loader.gate.clear()
        held = asyncio.Event()

        async def use() -> None:
            async with s.use(a, "A", NUM_CTX):
                held.set()
                await asyncio.sleep(0.05)
                assert digests(s) == {"A"}  # the request that loaded it still runs

        task = asyncio.create_task(use())
        await eventually(lambda: loader.active == 1)
        s.unload("A")  # `corral stop` while the model loads
        loader.gate.set()
        await task
        assert held.is_set()
        assert digests(s) == set()
        async with s.use(a, "A", NUM_CTX):  # a later request loads it again, to stay
            pass
        assert digests(s) == {"A"}

    run(test)


def test_a_blob_stopped_while_an_abandoned_load_runs_does_not_stay(
    models: tuple[Path, Path],
) -> None:
    a, _ = models
    loader = RecordingLoader()

    async def test() -> None:
        s = scheduler(loader)
        loader.gate.clear()

        async def use() -> None:
            async with s.use(a, "A", NUM_CTX):
                raise AssertionError("the cancelled request must not get the model")

        task = asyncio.create_task(use())
        await eventually(lambda: loader.active == 1)
        task.cancel()  # the client gave up (Ctrl-C), then ran `corral stop`
        with pytest.raises(asyncio.CancelledError):
            await task
        s.unload("A")
        loader.gate.set()
        await eventually(lambda: loader.active == 0)
        await asyncio.sleep(0.05)
        assert digests(s) == set()

    run(test)


def test_a_request_gone_mid_load_still_sets_how_long_the_model_stays(
    models: tuple[Path, Path],
) -> None:
    a, _ = models
    loader = RecordingLoader()

    async def test() -> None:
        s = Scheduler(default_keep_alive=0, loader=loader)  # type: ignore[arg-type]
        loader.gate.clear()

        async def warm_up() -> None:  # keep_alive -1 to pin it, from a client with a timeout
            await s.preload(a, "A", NUM_CTX, FOREVER)

        task = asyncio.create_task(warm_up())
        await eventually(lambda: loader.active == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        loader.gate.set()
        await eventually(lambda: loader.active == 0)
        await asyncio.sleep(0.05)
        (model,) = s.loaded()
        assert model.expires_at is None  # kept, as asked; not unloaded by the default 0

    run(test)
