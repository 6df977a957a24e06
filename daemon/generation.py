"""One generation: hold the model, join its batch loop, stream the text.

Yields the text pieces as they come (with their tokens' log probabilities when
asked), then one `Finished` with Ollama's statistics (nanoseconds) and the
conversation's tokens (`context`). The prompt
is rendered and tokenized in a worker thread, so a long prompt never blocks the
event loop; the model's batch loop (batcher.py) then prefills it and decodes it
together with the model's other running requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from corral.daemon.errors import RequestError
from corral.daemon.settings import GenerationSettings
from corral.daemon.state import DaemonState
from corral.registry.store import InstalledModel
from corral.runtime.engine import Done, Engine, Piece

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
) -> AsyncIterator[Piece | Finished]:
    """Text pieces, then Finished. Leaving early cancels the generation at once."""
    holding = state.scheduler.use(
        model.model_path, model.digest, settings.num_ctx, keep_alive, name=model.name
    )
    with state.cancellable() as cancel:
        async with holding as lease:
            loop = asyncio.get_running_loop()
            ids = await loop.run_in_executor(state.workers, prompt_ids, lease.engine)
            events = lease.batcher.generate(lease.session, ids, settings, cancel, model.name)
            async with contextlib.aclosing(events):
                async for event in events:
                    if isinstance(event, Piece):
                        yield event
                        continue
                    if event.reason == "cancel" and state.stopping:
                        raise RequestError("corral is shutting down; the answer was cut short", 503)
                    yield _finished(event, lease.load_duration_ns, started_ns, len(ids))


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
