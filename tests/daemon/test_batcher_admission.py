"""How the batch loop admits requests (daemon/batcher.py): requests with short prompts
that arrive together decode together from their first token; a long prompt is still
processed one chunk per step before anything else is admitted."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Sequence

import pytest

from corral.daemon.batcher import PREFILL_CHUNK, Batcher
from corral.daemon.settings import GenerationSettings
from corral.runtime.engine import Done, Engine, Piece
from corral.runtime.generation import Generation
from corral.runtime.sampling import SamplerOptions
from tiny import write_tiny_llama

TOKENS = 6
BATCH_LINE = re.compile(r"decoding a batch of (\d+)")


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    path = write_tiny_llama(
        tmp_path_factory.mktemp("admission") / "t.gguf", context_length=4096, endless=True
    )
    return Engine.load(path, num_ctx=1024, split=False)


async def answer(events) -> tuple[str, Done]:
    text = ""
    async for event in events:
        if isinstance(event, Piece):
            text += event.text
        elif isinstance(event, Done):
            return text, event
    raise AssertionError("the events ended without Done")


async def arriving_together(engine: Engine, prompts: Sequence[list[int]]) -> list[Done]:
    """Queue one request per prompt before the loop takes any, then read every answer."""
    batcher = Batcher(engine, "tiny")
    settings = GenerationSettings(SamplerOptions.greedy(), TOKENS, engine.num_ctx, ())
    sessions = engine.new_sessions(len(prompts))
    streams = [
        batcher.generate(session, prompt, settings, threading.Event(), f"request {i}")
        for i, (session, prompt) in enumerate(zip(sessions, prompts, strict=True))
    ]
    with batcher._wakeup:  # the loop's thread waits for this lock before taking a job
        tasks = [asyncio.ensure_future(answer(s)) for s in streams]
        while len(batcher._pending) < len(prompts):
            await asyncio.sleep(0.005)
    answers = await asyncio.gather(*tasks)
    batcher.close()
    return [done for _, done in answers]


def batch_sizes(caplog: pytest.LogCaptureFixture) -> list[int]:
    return [int(m) for r in caplog.records for m in BATCH_LINE.findall(r.getMessage())]


def test_short_prompts_that_arrive_together_decode_together(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    prompts = [engine.tokenizer.encode(t) for t in ("Hello there", "Once upon", "The cat")]
    with caplog.at_level(logging.INFO, logger="corral.daemon.batcher"):
        dones = asyncio.run(arriving_together(engine, prompts))
    assert [d.eval_count for d in dones] == [TOKENS] * 3
    assert batch_sizes(caplog) == [3]  # never 1, then 2, then 3


def test_a_long_prompt_is_processed_alone_a_chunk_per_step(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    long_prompt = engine.tokenizer.encode("the cat sat on the mat " * 25)
    assert len(long_prompt) > 2 * PREFILL_CHUNK
    prompts = [long_prompt, engine.tokenizer.encode("Hi"), engine.tokenizer.encode("Yo")]
    with caplog.at_level(logging.INFO, logger="corral.daemon.batcher"):
        dones = asyncio.run(arriving_together(engine, prompts))
    assert dones[0].prompt_eval_count == len(long_prompt)
    # the long prompt joins alone once its last chunk is done; the two short ones are
    # admitted together at the next step
    assert batch_sizes(caplog)[:2] == [1, 3]


def test_the_budget_counts_only_tokens_the_cache_does_not_hold(engine: Engine) -> None:
    session = engine.new_session()
    prompt = engine.tokenizer.encode("the cat sat on the mat " * 40)
    assert session.new_tokens(prompt) == len(prompt)
    session.tokens = list(prompt)
    assert session.new_tokens(prompt) == 1  # the last token always runs, for its logits
    assert session.new_tokens([*prompt, 7, 8]) == 2


def test_newcomers_prompts_run_in_the_step_that_decodes_the_others(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No pass of its own for a prompt: each step's forward pass runs the decoding rows
    and the admitted prompts' chunks together."""
    steps: list[tuple[int, int]] = []  # per step: (rows decoding, generations in a prompt)
    step = engine.step

    def recording_step(generations: Sequence[Generation]) -> list:
        prompting = sum(g.in_prompt for g in generations)
        steps.append((len(generations) - prompting, prompting))
        return step(generations)

    monkeypatch.setattr(engine, "step", recording_step)
    long_prompt = engine.tokenizer.encode("the cat sat on the mat " * 25)
    prompts = [long_prompt, engine.tokenizer.encode("Hi"), engine.tokenizer.encode("Yo")]
    asyncio.run(arriving_together(engine, prompts))
    chunks = -(-len(long_prompt) // PREFILL_CHUNK)
    assert steps[:chunks] == [(0, 1)] * chunks
    assert steps[chunks] == (1, 2)  # the long one's first decoding row, the short prompts
    assert steps[chunks + 1] == (3, 0)
    assert len(steps) == chunks + TOKENS  # the prompts cost no step of their own
