"""One loaded model's batch loop: its running generations advance together.

Each loaded model has one thread (started on first use) that owns the engine's
generations. A request hands it a job (its slot's session, the prompt ids, the
settings, a cancel Event) and reads the job's events in asyncio. Each step is one
forward pass (`Engine.step`) over every job: a decoding job's row is the token it
sampled last, a newcomer's rows are its prompt's next PREFILL_CHUNK tokens (after
what its slot's cache already holds). So a newcomer's prompt rides on the step that
decodes the running streams, and a long prompt delays them by one chunk's time per
token, not by the whole prompt. Between steps the loop admits the oldest waiting
job, and then, while the prompts admitted in that step add up to one chunk at most,
the next waiting ones: requests that arrive together decode together from their
first token. No job is admitted while a long prompt still has chunks to run.
A job leaves the batch as soon as it ends: stopped, out of tokens, or cancelled
(a cancelled job ends at the next step, with done reason "cancel").

A failed step fails the jobs in that step (their sessions are reset, so a
half-written KV cache is never reused); a request whose generation cannot start
(a prompt too long for its context) fails alone. Leaving the event iteration early
(the client went away) cancels the job and waits until the loop has dropped it,
so the slot's session is free when the slot is handed on. The loop logs each
change in the number of rows it decodes at once ("<model>: decoding a batch of N").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Any

from corral.daemon.errors import RequestError
from corral.daemon.settings import GenerationSettings
from corral.daemon.worker import END, ERROR, ITEM, Posted, posted_events
from corral.runtime.engine import Done, Engine, Session
from corral.runtime.generation import Event, Generation

log = logging.getLogger(__name__)

PREFILL_CHUNK = 128  # prompt tokens processed between two decode steps of the batch


class _Job:
    """One request's generation as the loop sees it; events go to the request's loop."""

    def __init__(
        self,
        session: Session,
        prompt: Sequence[int],
        settings: GenerationSettings,
        cancel: threading.Event,
        name: str,
    ) -> None:
        self.session = session
        self.prompt = list(prompt)
        self.settings = settings
        self.cancel = cancel
        self.name = name
        self.generation: Generation | None = None
        self._loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[Posted] = asyncio.Queue()
        self.dropped: asyncio.Future[None] = self._loop.create_future()  # the loop let go

    # ----- from the batch thread ----------------------------------------------

    def post(self, kind: int, value: Any = None) -> None:
        with contextlib.suppress(RuntimeError):  # the event loop is already closed
            self._loop.call_soon_threadsafe(self._receive, kind, value)

    def fail(self, error: BaseException) -> None:
        self.post(ERROR, error)

    def deliver(self, events: Sequence[Event]) -> bool:
        """Send `events` on; False once the generation has ended."""
        for event in events:
            self.post(ITEM, event)
            if isinstance(event, Done):
                log.info(
                    "%s: generation ended (%s) after %d tokens",
                    self.name,
                    event.reason,
                    event.eval_count,
                )
                self.post(END)
                return False
        return True

    # ----- on the event loop --------------------------------------------------

    def _receive(self, kind: int, value: Any) -> None:
        self.queue.put_nowait((kind, value))
        if kind != ITEM and not self.dropped.done():
            self.dropped.set_result(None)


class Batcher:
    """The batch loop of one loaded model (one thread, started on first use)."""

    def __init__(self, engine: Engine, label: str) -> None:
        self.engine = engine
        self.label = label  # the model's name when it was loaded, for the log
        self._pending: deque[_Job] = deque()
        self._active: list[_Job] = []  # decoding; only the loop's thread touches these
        self._prompting: list[_Job] = []  # admitted, their prompts not yet run through
        self._wakeup = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._rows = 0  # rows in the latest step

    async def generate(
        self,
        session: Session,
        prompt: Sequence[int],
        settings: GenerationSettings,
        cancel: threading.Event,
        name: str,
    ) -> AsyncIterator[Event]:
        """The generation's events: Pieces, then one Done. Errors are raised here."""
        job = _Job(session, prompt, settings, cancel, name)
        with self._wakeup:
            if self._closed:
                raise RequestError(f"{self.label} was unloaded; try again", 503)
            self._pending.append(job)
            self._start()
            self._wakeup.notify()
        try:
            async for event in posted_events(job.queue):
                yield event
        finally:
            cancel.set()
            self._notify()
            await asyncio.shield(job.dropped)

    def close(self) -> None:
        """Stop the loop once its jobs have ended (it cancels them first)."""
        with self._wakeup:
            self._closed = True
            self._wakeup.notify()

    # ----- the loop -----------------------------------------------------------

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"corral-batch-{self.label}", daemon=True
            )
            self._thread.start()

    def _notify(self) -> None:
        with self._wakeup:
            self._wakeup.notify()

    def _run(self) -> None:
        while True:
            running, newcomer = self._next()
            if not running:
                return
            try:
                self._admit_arrivals(newcomer)
                if self._active or self._prompting:
                    self._step()
            except Exception as e:  # a bug here must not leave requests waiting forever
                log.exception("%s: the batch loop failed", self.label)
                for job in [*self._active, *self._prompting]:
                    job.fail(e)
                self._active, self._prompting = [], []

    def _next(self) -> tuple[bool, _Job | None]:
        """Once there is work: (True, the next job to admit or None); (False, None) when
        closed with nothing left to finish. Nothing is admitted while a prompt goes on."""
        with self._wakeup:
            while not self._pending and not self._active and not self._prompting:
                if self._closed:
                    return False, None
                self._wakeup.wait()
            if self._closed:
                for job in [*self._pending, *self._active, *self._prompting]:
                    job.cancel.set()
            admit = self._pending and not self._prompting
            return True, self._pending.popleft() if admit else None

    def _admit_arrivals(self, newcomer: _Job | None) -> None:
        """Admit the newcomer and then, while the prompts admitted this step come to at
        most PREFILL_CHUNK new tokens, the next waiting jobs whose prompts fit what is left."""
        budget = PREFILL_CHUNK
        while newcomer is not None:
            budget -= newcomer.session.new_tokens(newcomer.prompt)
            self._admit(newcomer)
            newcomer = self._take_waiting(budget)

    def _take_waiting(self, budget: int) -> _Job | None:
        """The oldest waiting job if its prompt's new tokens fit `budget`."""
        with self._wakeup:
            if self._closed or not self._pending:
                return None
            job = self._pending[0]
            return self._pending.popleft() if job.session.new_tokens(job.prompt) <= budget else None

    def _admit(self, job: _Job) -> None:
        """Start the newcomer's generation; its prompt runs from the next step on."""
        if job.cancel.is_set():  # its client left (or the daemon stops) before it started
            _end_cancelled(job)
            return
        s = job.settings
        try:
            job.generation = self.engine.start_generation(
                job.session,
                job.prompt,
                s.sampler,
                s.num_predict,
                s.stop,
                job.cancel,
                prefill_chunk=PREFILL_CHUNK,
                num_ctx=s.num_ctx,
                logprobs=s.logprobs,
            )
        except Exception as e:
            job.fail(e)
            return
        log.info("%s: generating from %d prompt tokens", job.name, len(job.prompt))
        self._prompting.append(job)

    def _step(self) -> None:
        """One forward pass: every decoding job advances by a token, every job in its
        prompt runs the prompt's next chunk (one cancelled meanwhile ends first)."""
        for job in [j for j in self._prompting if j.cancel.is_set()]:
            self._prompting.remove(job)
            _end_cancelled(job)
        if self._active and len(self._active) != self._rows:
            log.info("%s: decoding a batch of %d", self.label, len(self._active))
            self._rows = len(self._active)
        jobs = [*self._active, *self._prompting]
        if not jobs:
            return
        try:
            results = self.engine.step([j.generation for j in jobs])  # type: ignore[misc]
        except Exception as e:
            for job in jobs:
                _forget(job.session)
                job.fail(e)
            self._active, self._prompting = [], []
            return
        self._active, self._prompting = [], []
        for job, events in zip(jobs, results, strict=True):
            if events is None:
                self._prompting.append(job)
            elif job.deliver(events):
                self._active.append(job)


def _end_cancelled(job: _Job) -> None:
    """End a job cancelled before its prompt was through; its cache keeps the chunks
    done, matching session.tokens."""
    job.deliver([Done("cancel", 0, 0, 0, 0, context=tuple(job.session.tokens))])


def _forget(session: Session) -> None:
    """Empty a session whose cache a failed step may have left half-written."""
    session.cache.truncate(0)
    session.tokens.clear()
