"""Batched decoding: one forward step advances several sessions, each at its own position."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from corral.runtime.arch.llama import Llama
from corral.runtime.engine import Done, Engine, Piece
from corral.runtime.kv_cache import KVCache
from corral.runtime.sampling import SamplerOptions
from tiny import write_tiny_llama
from tiny_archs import TinyShape, write_tiny_arch

PROMPTS = ["the cat sat", "on the mat and then", "a", "there were three of them"]


# "-split": batched products half in a helper process (runtime/split.py)
@pytest.fixture(scope="module", params=["llama", "qwen2", "gemma3", "llama-split", "gemma3-split"])
def engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    arch, _, split = request.param.partition("-")
    folder = tmp_path_factory.mktemp(request.param)
    if arch == "llama":
        return Engine.load(
            write_tiny_llama(folder / "m.gguf", weight_type="Q8_0"), split=bool(split)
        )
    shape = TinyShape(sliding_window=3) if arch == "gemma3" else None
    return Engine.load(write_tiny_arch(folder / "m.gguf", arch, shape), split=bool(split))


def separate_caches(model: Llama, n: int) -> list[KVCache]:
    return [model.new_cache(64) for _ in range(n)]


def pooled_caches(model: Llama, n: int) -> list[KVCache]:
    """Slots of one pool, out of order, with an idle slot (3) inside their span."""
    pool = model.new_pool(n + 2, 64).new_caches()
    return [pool[i] for i in (4, 1, 2, 5, 0, 6)[:n]]


def pooled_reversed(model: Llama, n: int) -> list[KVCache]:
    """Every slot of one pool, last first: the whole span, out of order."""
    return model.new_pool(n, 64).new_caches()[::-1]


def pooled_in_order(model: Llama, n: int) -> list[KVCache]:
    """Every slot of one pool in order: attention needs no rows scattered or gathered."""
    return model.new_pool(n, 64).new_caches()


@pytest.mark.parametrize(
    "make_caches", [separate_caches, pooled_caches, pooled_reversed, pooled_in_order]
)
def test_forward_batch_equals_one_sequence_at_a_time(
    engine: Engine, make_caches: Callable[[Llama, int], list[KVCache]]
) -> None:
    model = engine.model
    prompts = [engine.tokenizer.encode(p) for p in PROMPTS]
    solo, batched = [], []
    for ids in prompts:  # different lengths: each row sits at its own position
        cache = model.new_cache(64)
        model.forward(np.array(ids), cache)
        solo.append(model.forward(np.array([7]), cache))
    caches = make_caches(model, len(prompts))
    for ids, cache in zip(prompts, caches, strict=True):
        model.forward(np.array(ids), cache)
    batched = model.forward_batch(np.array([7] * len(prompts)), caches)  # (B, V)
    np.testing.assert_allclose(batched, np.stack(solo), atol=2e-4, rtol=1e-4)
    assert [c.length for c in caches] == [len(p) + 1 for p in prompts]


@pytest.mark.parametrize("make_caches", [separate_caches, pooled_caches])
def test_prompt_chunks_and_decoding_rows_run_in_one_pass(
    engine: Engine, make_caches: Callable[[Llama, int], list[KVCache]]
) -> None:
    """hidden_batch: segments of any lengths, in any order, give what each gives alone."""
    model = engine.model
    prompts = [engine.tokenizer.encode(p) for p in PROMPTS]
    decoding = {0, 2}  # these hold their prompts and run a token; the others run prompts
    solo = []
    for b, ids in enumerate(prompts):
        cache = model.new_cache(64)
        if b in decoding:
            model.forward(np.array(ids), cache)
            ids = [7]
        solo.append(model.forward(np.array(ids), cache))
    caches = make_caches(model, len(prompts))
    for b in decoding:
        model.forward(np.array(prompts[b]), caches[b])
    segments = [np.array([7] if b in decoding else ids) for b, ids in enumerate(prompts)]
    assert max(len(s) for s in segments) > 1
    hidden = model.hidden_batch(segments, caches)  # (B, d)
    np.testing.assert_allclose(model.logits(hidden), np.stack(solo), atol=2e-4, rtol=1e-4)
    expected = [len(ids) + (b in decoding) for b, ids in enumerate(prompts)]
    assert [c.length for c in caches] == expected


def test_a_prompt_runs_in_the_steps_that_decode_others(engine: Engine) -> None:
    """A generation started while others decode runs its prompt, a chunk a step, in the
    same forward passes; every answer is the one it gets alone."""
    sessions = engine.new_sessions(3)
    greedy = SamplerOptions.greedy()
    ids = [engine.tokenizer.encode(p) for p in PROMPTS[:2]]
    gens = [
        engine.start_generation(s, i, greedy, 10) for s, i in zip(sessions[:2], ids, strict=True)
    ]
    events = [engine.prefill(g) for g in gens]
    for _ in range(3):
        for mine, new in zip(events, engine.step(gens), strict=True):
            mine.extend(new or [])
    late_ids = engine.tokenizer.encode(PROMPTS[3])
    late = engine.start_generation(sessions[2], late_ids, greedy, 10, prefill_chunk=2)
    gens.append(late)
    events.append([])
    steps_in_prompt = 0
    while any(g.in_prompt or g.next_token is not None for g in gens):
        steps_in_prompt += late.in_prompt
        for mine, new in zip(events, engine.step(gens), strict=True):
            mine.extend(new or [])
    assert steps_in_prompt == -(-len(late_ids) // 2) > 1
    for prompt, mine in zip([*ids, late_ids], events, strict=True):
        alone = list(engine.generate(engine.new_session(), prompt, greedy, 10))
        assert isinstance(mine[-1], Done) and mine[-1].generated == alone[-1].generated
    assert events[2][-1].prompt_eval_count == len(late_ids)


def drive_batch(engine: Engine, n: int, pooled: bool = False) -> list[tuple[str, Done]]:
    sessions = (
        engine.new_sessions(len(PROMPTS)) if pooled else [engine.new_session() for _ in PROMPTS]
    )
    gens = [
        engine.start_generation(s, engine.tokenizer.encode(p), SamplerOptions.greedy(), n)
        for s, p in zip(sessions, PROMPTS, strict=True)
    ]
    events = [engine.prefill(g) for g in gens]
    while any(g.next_token is not None for g in gens):
        for mine, new in zip(events, engine.step(gens), strict=True):
            mine.extend(new)
    out = []
    for evs in events:
        assert isinstance(evs[-1], Done)
        out.append(("".join(e.text for e in evs if isinstance(e, Piece)), evs[-1]))
    return out


@pytest.mark.parametrize("pooled", [False, True])
def test_step_gives_the_same_tokens_as_generate(engine: Engine, pooled: bool) -> None:
    batched = drive_batch(engine, 12, pooled)
    for prompt, (text, done) in zip(PROMPTS, batched, strict=True):
        events = list(
            engine.generate(
                engine.new_session(), engine.tokenizer.encode(prompt), SamplerOptions.greedy(), 12
            )
        )
        assert events[-1].generated == done.generated
        assert "".join(e.text for e in events if isinstance(e, Piece)) == text


@pytest.mark.slow
def test_real_model_batch_matches_single_streams(smollm2_path: Path) -> None:
    engine = Engine.load(smollm2_path)
    batched = drive_batch(engine, 16, pooled=True)
    for prompt, (_, done) in zip(PROMPTS, batched, strict=True):
        ids = engine.tokenizer.encode(prompt)
        single = list(engine.generate(engine.new_session(), ids, SamplerOptions.greedy(), 16))
        assert single[-1].generated == done.generated


def test_step_processes_the_prompt_a_chunk_at_a_time(engine: Engine) -> None:
    prompt = engine.tokenizer.encode(" ".join(PROMPTS))  # several chunks of 3
    gen = engine.start_generation(
        engine.new_session(), prompt, SamplerOptions.greedy(), 6, prefill_chunk=3
    )
    steps = 1
    while (events := engine.step([gen])[0]) is None:
        assert gen.session.cache.length == 3 * steps  # one chunk more each step
        steps += 1
    assert steps == -(-len(prompt) // 3) > 2
    while gen.next_token is not None:
        events += engine.step([gen])[0]
    done = events[-1]
    assert isinstance(done, Done) and done.prompt_eval_count == len(prompt)
    alone = list(engine.generate(engine.new_session(), prompt, SamplerOptions.greedy(), 6))
    assert done.generated == alone[-1].generated


def test_a_pool_is_freed_with_its_last_session_without_the_cycle_collector(
    engine: Engine,
) -> None:
    sessions = engine.new_sessions(3)
    pool = weakref.ref(sessions[0].cache.pool)
    gc.disable()
    try:
        del sessions
        assert pool() is None
    finally:
        gc.enable()
