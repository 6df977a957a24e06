"""The engine on tiny generated models: KV cache, sessions, stopping, cancelling."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from corral.runtime.arch import UnsupportedArchitecture
from corral.runtime.engine import Done, Engine, Piece
from corral.runtime.kv_cache import ContextFull
from corral.runtime.sampling import SamplerOptions
from tiny import write_tiny_llama


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    path = write_tiny_llama(tmp_path_factory.mktemp("m") / "tiny.gguf", weight_type="Q8_0")
    return Engine.load(path)


def run(engine: Engine, session, ids, **kw) -> tuple[str, Done]:
    events = list(engine.generate(session, ids, **kw))
    assert isinstance(events[-1], Done)
    return "".join(e.text for e in events[:-1] if isinstance(e, Piece)), events[-1]


def test_batched_prefill_equals_token_by_token(engine: Engine) -> None:
    tokens = np.array([5, 70, 80, 90, 100, 3, 7, 200, 11])
    batched = engine.model.forward(tokens, engine.model.new_cache(32))
    cache = engine.model.new_cache(32)
    for t in tokens:
        stepped = engine.model.forward(np.array([t]), cache)
    np.testing.assert_allclose(batched, stepped, atol=1e-4)


def test_generation_is_deterministic_and_sessions_are_independent(engine: Engine) -> None:
    ids = engine.tokenizer.encode("the cat sat on")
    a, done_a = run(
        engine, engine.new_session(), ids, options=SamplerOptions.greedy(), num_predict=12
    )
    other = engine.new_session()
    run(engine, other, engine.tokenizer.encode("something else entirely"), num_predict=5)
    b, done_b = run(
        engine, engine.new_session(), ids, options=SamplerOptions.greedy(), num_predict=12
    )
    assert done_a.generated == done_b.generated and a == b
    assert done_a.prompt_eval_count == len(ids)


def test_reused_session_only_processes_new_tokens(engine: Engine) -> None:
    session = engine.new_session()
    ids = engine.tokenizer.encode("the cat sat on the mat")
    _, first = run(engine, session, ids, options=SamplerOptions.greedy(), num_predict=4)
    follow = list(first.context) + engine.tokenizer.encode(" and then")
    _, second = run(engine, session, follow, options=SamplerOptions.greedy(), num_predict=4)
    # the new text, and the first turn's last token: out of tokens, it was not run
    assert second.prompt_eval_count == len(follow) - len(first.context) + 1
    # the same continuation as a fresh session computing everything
    _, fresh = run(
        engine, engine.new_session(), follow, options=SamplerOptions.greedy(), num_predict=4
    )
    assert fresh.generated == second.generated


def test_after_a_stop_string_the_context_holds_the_answer_as_shown(engine: Engine) -> None:
    ids = engine.tokenizer.encode("the cat sat on the mat")
    free, _ = run(
        engine, engine.new_session(), ids, options=SamplerOptions.greedy(), num_predict=24
    )
    assert len(free) > 12
    for stop in (free[5:9], free[len(free) // 2 : len(free) // 2 + 1]):  # cut tokens, or not
        text, done = run(
            engine, engine.new_session(), ids, options=SamplerOptions.greedy(), num_predict=24,
            stop=[stop],
        )  # fmt: skip
        assert done.reason == "stop" and free.startswith(text) and stop not in text
        assert done.context[: len(ids)] == tuple(ids)
        assert engine.tokenizer.decode(done.context[len(ids) :]) == text


def test_num_predict_and_length_reason(engine: Engine) -> None:
    _, done = run(
        engine,
        engine.new_session(),
        [5, 6, 7],
        num_predict=3,
        options=SamplerOptions(temperature=1.0, seed=1),
    )
    assert 1 <= done.eval_count <= 3
    ended_on_eog = done.generated[-1] in engine.tokenizer.eog_ids
    assert done.reason == ("stop" if ended_on_eog else "length")
    assert done.eval_count == 3 or ended_on_eog


def test_cancel_stops_generation(engine: Engine) -> None:
    cancel = threading.Event()
    cancel.set()
    _, done = run(engine, engine.new_session(), [5, 6, 7], cancel=cancel, num_predict=50)
    assert done.reason == "cancel" and done.eval_count == 0


def test_prompt_longer_than_context_is_refused(engine: Engine) -> None:
    with pytest.raises(ContextFull, match="more than the context window"):
        list(engine.generate(engine.new_session(num_ctx=8), list(range(10, 30))))


def test_a_generation_keeps_to_a_window_smaller_than_its_sessions(engine: Engine) -> None:
    session = engine.new_session(num_ctx=64)
    with pytest.raises(ContextFull, match="context window of 12"):
        engine.start_generation(session, list(range(10, 22)), num_ctx=12)
    gen = engine.start_generation(session, [5, 6, 7], SamplerOptions(temperature=0), num_ctx=12)
    events = engine.prefill(gen)
    while gen.next_token is not None:
        events = engine.step([gen])[0]
    (done,) = [e for e in events if isinstance(e, Done)]
    assert done.reason == "length" and session.cache.length == 12


def test_unknown_architecture_is_named(tmp_path: Path) -> None:
    path = write_tiny_llama(tmp_path / "t.gguf")
    data = path.read_bytes().replace(b"llama", b"zzzzz", 1)  # general.architecture value
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(data)
    with pytest.raises(UnsupportedArchitecture, match=r"'zzzzz'.*supported: llama"):
        Engine.load(bad)
