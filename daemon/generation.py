"""One generation: hold the model, run the engine in a worker thread, stream its text.

Yields the text pieces as they come, then one `Finished` with Ollama's
statistics (nanoseconds) and the conversation's tokens (`context`). The prompt
is rendered and tokenized in the worker thread too, so a long prompt never
blocks the event loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from corral.daemon.errors import RequestError
from corral.daemon.scheduler import Lease
from corral.daemon.settings import GenerationSettings
from corral.daemon.state import DaemonState
from corral.daemon.worker import Emit, events_from_thread
from corral.registry.store import InstalledModel
from corral.runtime.engine import Done, Engine, Piece

log = logging.getLogger(__name__)

PromptIds = Callable[[Engine], list[int]]  # the prompt's token ids for the loaded engine


@dataclass(frozen=True)
class Finished:
    done_reason: str
    total_duration: int
    load_duration: int
    prompt_eval_count: int
    prompt_eval_duration: int
    eval_count: int
    eval_duration: int
    context: tuple[int, ...] = ()  # the conversation's tokens after this answer
    prompt_tokens: int = 0  # the whole prompt; prompt_eval_count excludes the reused prefix


async def generate(
    state: DaemonState,
    model: InstalledModel,
    settings: GenerationSettings,
    keep_alive: float | None,
    prompt_ids: PromptIds,
    started_ns: int,
) -> AsyncIterator[str | Finished]:
    """Text pieces, then Finished. Leaving early cancels the engine's loop."""
    holding = state.scheduler.use(
        model.model_path, model.digest, settings.num_ctx, keep_alive, name=model.name
    )
    with state.cancellable() as cancel:
        async with holding as lease:
            prompt_length: list[int] = []  # set in the worker before its first event

            def work(emit: Emit[Piece | Done]) -> None:
                ids = prompt_ids(lease.engine)
                prompt_length.append(len(ids))
                _run_engine(lease, ids, settings, cancel, emit, model.name)

            async for event in events_from_thread(work, cancel, state.workers):
                if isinstance(event, Piece):
                    yield event.text
                    continue
                if event.reason == "cancel" and state.stopping:
                    raise RequestError("corral is shutting down; the answer was cut short", 503)
                yield _finished(event, lease.load_duration_ns, started_ns, prompt_length[0])


def _run_engine(
    lease: Lease,
    ids: list[int],
    settings: GenerationSettings,
    cancel: threading.Event,
    emit: Emit[Piece | Done],
    name: str,
) -> None:
    """In the worker thread: generate from the prompt's ids, emitting every event."""
    engine, s = lease.engine, settings
    log.info("%s: generating from %d prompt tokens", name, len(ids))
    for event in engine.generate(lease.session, ids, s.sampler, s.num_predict, s.stop, cancel):
        emit(event)
        if isinstance(event, Done):
            log.info(
                "%s: generation ended (%s) after %d tokens", name, event.reason, event.eval_count
            )


def _finished(done: Done, load_ns: int, started_ns: int, prompt_tokens: int) -> Finished:
    return Finished(
        done_reason=done.reason,
        total_duration=time.perf_counter_ns() - started_ns,
        load_duration=load_ns,
        prompt_eval_count=done.prompt_eval_count,
        prompt_eval_duration=done.prompt_eval_duration_ns,
        eval_count=done.eval_count,
        eval_duration=done.eval_duration_ns,
        context=done.context,
        prompt_tokens=prompt_tokens,
    )
