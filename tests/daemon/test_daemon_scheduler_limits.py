"""The scheduler's limits in-process: memory budget, LRU eviction, slots, the bounded queue.

Real tiny GGUF files, the real engine loader and the real size estimate.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from corral.daemon.errors import RequestError
from corral.daemon.memory import estimate_model_bytes
from corral.daemon.scheduler import Scheduler
from corral.runtime.engine import Engine
from tiny import write_tiny_llama

NUM_CTX = 64
FOREVER = math.inf
Models = tuple[Path, Path, Path]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    folder = tmp_path_factory.mktemp("limits")
    a, b, c = (write_tiny_llama(folder / f"{n}.gguf", seed=i) for i, n in enumerate("abc"))
    return a, b, c


@pytest.fixture(scope="module")
def size(models: Models) -> int:
    """What one tiny model takes once loaded (they all have the same shape)."""
    return estimate_model_bytes(models[0], NUM_CTX)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 60))


def names(s: Scheduler) -> set[str]:
    return {m.name for m in s.loaded()}


async def settle() -> None:
    """Let every task that can run, run (no timing involved: a few loop turns)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def use_once(s: Scheduler, path: Path, **kw: object) -> None:
    async with s.use(path, path.stem, NUM_CTX, name=path.stem, **kw):  # type: ignore[arg-type]
        pass


def test_the_size_estimate_counts_float32_weights_and_the_kv_cache(models: Models) -> None:
    small, large = (estimate_model_bytes(models[0], n) for n in (64, 128))
    per_token = 2 * 2 * 2 * 16 * 4  # K and V, 2 layers, 2 KV heads, head_dim 16, float32
    assert large - small == 64 * per_token
    assert estimate_model_bytes(models[0], 64, num_parallel=3) - small == 2 * 64 * per_token
    assert small > models[0].stat().st_size  # F32 file: weights are the file's bulk
    capped = estimate_model_bytes(models[0], 100_000)  # num_ctx is capped at the model's 256
    assert capped == estimate_model_bytes(models[0], 256)


@pytest.mark.parametrize("weight_type", ["F32", "F16", "Q8_0", "BF16"])
def test_the_size_estimate_is_what_the_loaded_weights_take(
    tmp_path: Path, weight_type: str
) -> None:
    """bfloat16 matrices for quantized files, float32 for the rest (runtime/bf16.py)."""
    path = write_tiny_llama(tmp_path / "m.gguf", weight_type=weight_type, d_model=256)
    weights = Engine.load(path, split=False).model.weights
    arrays = [weights.tok_embd, weights.out_norm]
    if weights.output is not weights.tok_embd:
        arrays.append(weights.output)
    for layer in weights.layers:
        arrays += [layer.attn_norm, layer.wqkv, layer.wo, layer.ffn_norm, layer.w_gate_up]
        arrays.append(layer.w_down)
    per_token = 2 * 2 * 2 * 64 * 4  # K and V, 2 layers, 2 KV heads, head_dim 64, float32
    kv = NUM_CTX * per_token
    assert estimate_model_bytes(path, NUM_CTX) - kv == sum(a.nbytes for a in arrays)


def test_the_memory_budget_evicts_the_least_recently_used_idle_model(
    models: Models, size: int
) -> None:
    a, b, c = models

    async def test() -> None:
        s = Scheduler(default_keep_alive=FOREVER, max_loaded=3, max_memory=int(size * 2.5))
        await use_once(s, a)
        await use_once(s, b)
        await use_once(s, a)  # a is now the most recently used
        await use_once(s, c)  # only two fit: b goes
        assert names(s) == {"a", "c"}
        assert sum(m.size for m in s.loaded()) <= size * 2.5

    run(test)


def test_a_busy_model_is_never_evicted_for_memory(models: Models, size: int) -> None:
    a, b, _ = models

    async def test() -> None:
        s = Scheduler(default_keep_alive=FOREVER, max_loaded=3, max_memory=int(size * 1.5))
        order: list[str] = []

        async def use_b() -> None:
            async with s.use(b, "b", NUM_CTX, name="b"):
                order.append("b running")

        async with s.use(a, "a", NUM_CTX, name="a"):
            waiting = asyncio.create_task(use_b())
            await settle()
            assert names(s) == {"a"} and s.waiting == 1 and not order
            order.append("a released")
        await waiting
        assert order == ["a released", "b running"] and names(s) == {"b"}

    run(test)


def test_a_budget_for_fewer_parallel_requests_loads_with_fewer_slots(models: Models) -> None:
    """As Ollama falls back to one: the model loads, serving as many requests at once as
    the budget holds KV caches for, instead of being refused."""
    a = models[0]
    two = estimate_model_bytes(a, NUM_CTX, 2)
    assert two < estimate_model_bytes(a, NUM_CTX, 3)

    async def test() -> None:
        s = Scheduler(default_keep_alive=FOREVER, max_memory=two, num_parallel=4)
        await use_once(s, a)
        (model,) = s._loaded.values()
        assert len(model.pool.slots) == 2 and model.size == two

    run(test)


def test_a_model_larger_than_the_budget_is_refused_clearly(models: Models, size: int) -> None:
    a, b, _ = models

    big = estimate_model_bytes(b, 256)

    async def test() -> None:
        s = Scheduler(default_keep_alive=FOREVER, max_memory=(size + big) // 2)
        await use_once(s, a)
        with pytest.raises(RequestError) as caught:
            async with s.use(b, "b", 256, name="big"):  # a larger context: over the budget
                raise AssertionError("must not load")
        assert caught.value.status == 507
        message = str(caught.value)
        assert message.startswith("big needs about") and "CORRAL_MAX_MEMORY" in message
        assert names(s) == {"a"}  # nothing was evicted for a model that cannot fit
        assert s.waiting == 0

    run(test)


def test_a_full_queue_answers_503_and_frees_up_when_requests_leave(models: Models) -> None:
    a, _, _ = models

    async def test() -> None:
        s = Scheduler(default_keep_alive=FOREVER, num_parallel=1, max_queue=1)
        async with s.use(a, "a", NUM_CTX, name="a"):
            queued = asyncio.create_task(use_once(s, a))
            await settle()
            assert s.waiting == 1
            with pytest.raises(RequestError) as caught:
                await use_once(s, a)
            assert caught.value.status == 503
            assert str(caught.value) == (
                "server busy: the queue of waiting requests is full (CORRAL_MAX_QUEUE=1); "
                "try again later"
            )
            queued.cancel()  # its client went away: it leaves the queue at once
            with pytest.raises(asyncio.CancelledError):
                await queued
            assert s.waiting == 0
            again = asyncio.create_task(use_once(s, a))
            await settle()
            assert s.waiting == 1
        await again
        assert s.waiting == 0

    run(test)


def test_parallel_slots_serve_together_and_hand_over_in_arrival_order(models: Models) -> None:
    a, _, _ = models

    async def test() -> None:
        s = Scheduler(default_keep_alive=FOREVER, num_parallel=2)
        served: list[str] = []

        async def wait_turn(label: str) -> None:
            async with s.use(a, "a", NUM_CTX, name="a"):
                served.append(label)

        async with s.use(a, "a", NUM_CTX) as first, s.use(a, "a", NUM_CTX) as second:
            assert {first.slot.index, second.slot.index} == {0, 1}
            assert first.session is not second.session
            later = [asyncio.create_task(wait_turn(x)) for x in ("third", "fourth")]
            await settle()
            assert s.waiting == 2 and not served
            assert s.loaded()[0].in_use == 4
        await asyncio.gather(*later)
        assert served == ["third", "fourth"]

    run(test)


def test_the_last_freed_slot_is_reused_so_a_conversation_keeps_its_cache(models: Models) -> None:
    a, _, _ = models

    async def test() -> None:
        s = Scheduler(default_keep_alive=FOREVER, num_parallel=3)
        async with s.use(a, "a", NUM_CTX) as lease:
            session = lease.session
        for _ in range(3):
            async with s.use(a, "a", NUM_CTX) as again:
                assert again.session is session

    run(test)


def test_shutdown_refuses_queued_and_new_requests(models: Models) -> None:
    a, _, _ = models

    async def test() -> None:
        s = Scheduler(default_keep_alive=FOREVER, num_parallel=1)
        async with s.use(a, "a", NUM_CTX):
            queued = asyncio.create_task(use_once(s, a))
            await settle()
            s.shutdown()
            with pytest.raises(RequestError, match="corral is shutting down") as caught:
                await queued
            assert caught.value.status == 503
        with pytest.raises(RequestError, match="shutting down"):
            await use_once(s, a)
        assert s.loaded() == []  # released during shutdown: unloaded at once

    run(test)


def test_the_latest_request_sets_keep_alive(models: Models) -> None:
    a, _, _ = models

    async def test() -> None:
        s = Scheduler(default_keep_alive=FOREVER)
        await use_once(s, a, keep_alive=FOREVER)
        (kept,) = s.loaded()
        assert kept.expires_at is None  # forever
        await use_once(s, a, keep_alive=600)
        (timed,) = s.loaded()
        assert timed.expires_at is not None and timed.expires_at > datetime.now(UTC)
        await use_once(s, a, keep_alive=0)
        assert s.loaded() == []

    run(test)


def test_loaded_describes_each_model_for_ps(models: Models, size: int) -> None:
    a, b, _ = models

    async def test() -> None:
        s = Scheduler(default_keep_alive=300, max_loaded=2)
        await use_once(s, a)
        async with s.use(b, "digest-b", NUM_CTX, name="bee:latest"):
            newest, older = s.loaded()
            assert (newest.name, newest.digest, newest.path) == ("bee:latest", "digest-b", b)
            assert (newest.size, newest.num_ctx, newest.in_use) == (size, NUM_CTX, 1)
            assert newest.expires_at is not None and not newest.stopping
            assert (older.name, older.in_use) == ("a", 0)
            s.unload("digest-b")  # in use: it goes when its request ends
            assert s.loaded()[0].stopping
        assert names(s) == {"a"}

    run(test)


def test_a_blob_deleted_before_its_load_is_a_404(models: Models, tmp_path: Path) -> None:
    """Its last name removed while its first request was on its way: not a 422 naming
    the missing file, but the model not found."""
    gone = tmp_path / "gone.gguf"
    gone.write_bytes(models[0].read_bytes())
    gone.unlink()

    async def test() -> None:
        s = Scheduler(default_keep_alive=FOREVER)
        with pytest.raises(RequestError) as caught:
            await use_once(s, gone)
        assert caught.value.status == 404
        assert str(caught.value) == "model 'gone' was deleted while it was being loaded"
        assert names(s) == set() and s.waiting == 0

    run(test)
