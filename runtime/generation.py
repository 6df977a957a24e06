"""The decoding state of one request, advanced one token at a time.

A `Generation` decides the next token and when to stop; whoever drives it runs
the model. `Engine.generate` drives one alone; `Engine.decode_step` advances
several at once with one batched forward pass (each in its own session):

    events = gen.start()                    # prefill, then the first token
    # (or: while (events := gen.prefill_step()) is None: ...  one prompt chunk at a
    #  time, so a batch loop can step other generations between the chunks)
    while gen.next_token is not None:
        logits = <gen.next_token run through the model in gen.session's cache>
        events = gen.advance(logits)        # Piece(...)s, and Done(...) at the end
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass

import numpy as np

from corral.runtime.sampling import Sampler, SamplerOptions
from corral.runtime.stream import TextStream
from corral.runtime.tokenizer import Tokenizer


@dataclass(frozen=True)
class Piece:
    """A piece of generated text (never a partial UTF-8 character)."""

    text: str


@dataclass(frozen=True)
class Done:
    """The end of a generation, with Ollama's statistics."""

    reason: str  # "stop" | "length" | "cancel"
    prompt_eval_count: int
    prompt_eval_duration_ns: int
    eval_count: int
    eval_duration_ns: int
    generated: tuple[int, ...] = ()  # the sampled token ids, an end-of-generation token included
    context: tuple[int, ...] = ()  # the conversation's tokens after this turn


Event = Piece | Done
# Brings a session's cache to hold the prompt, one chunk per iteration; returns
# (last logits (V,), tokens evaluated).
PrefillChunks = Generator[None, None, tuple[np.ndarray, int]]
Prefill = Callable[[], PrefillChunks]


class Generation:
    """Sampler, text stream and counters of one request in one session."""

    def __init__(
        self,
        session: object,  # an engine Session: .cache (KVCache) and .tokens (list[int])
        tokenizer: Tokenizer,
        prompt: Sequence[int],
        prefill: Prefill,
        options: SamplerOptions | None = None,
        num_predict: int = -1,
        stop: Sequence[str] = (),
        cancel: threading.Event | None = None,
    ) -> None:
        self.session = session
        self._tokenizer = tokenizer
        self._prefill = prefill
        self._sampler = Sampler(options or SamplerOptions())
        self._history = list(prompt)
        self._text = TextStream(tokenizer.token_bytes, stop)
        self._num_predict = num_predict
        self._cancel = cancel
        self._generated: list[int] = []
        self._prompt_stats = (0, 0)  # (tokens evaluated, ns)
        self._prefilling: PrefillChunks | None = None
        self._prefill_started = 0
        self._decode_started = 0
        self.next_token: int | None = None  # the token to run next; None once finished

    def start(self) -> list[Event]:
        """Process the prompt and sample the first token."""
        while (events := self.prefill_step()) is None:
            pass
        return events

    def prefill_step(self) -> list[Event] | None:
        """Process the next chunk of the prompt: None while some of it is left, then
        (after the last chunk) the events of sampling the first token, as `start` gives."""
        if self._prefilling is None:
            self._prefill_started = time.perf_counter_ns()
            self._prefilling = self._prefill()
        try:
            next(self._prefilling)
            return None
        except StopIteration as finished:
            logits, n_evaluated = finished.value
        self._decode_started = time.perf_counter_ns()
        self._prompt_stats = (n_evaluated, self._decode_started - self._prefill_started)
        return self._step(logits)

    def advance(self, logits: np.ndarray) -> list[Event]:
        """`next_token` has been run through the model, giving `logits` (V,)."""
        assert self.next_token is not None, "advance() after the generation finished"
        self.session.tokens.append(self.next_token)
        return self._step(logits)

    def _step(self, logits: np.ndarray) -> list[Event]:
        events: list[Event] = []
        self.next_token = None
        if 0 <= self._num_predict <= len(self._generated):
            return self._finish("length", events)
        if self._cancel is not None and self._cancel.is_set():
            return self._finish("cancel", events)
        token = self._sampler.sample(logits, self._history)
        self._generated.append(token)
        if token in self._tokenizer.eog_ids:
            return self._finish("stop", events)
        self._history.append(token)
        if not self._tokenizer.is_control(token) and (piece := self._text.push(token)):
            events.append(Piece(piece))
        if self._text.stopped:
            return self._finish("stop", events)
        cache = self.session.cache
        if cache.length >= cache.n_ctx:
            return self._finish("length", events)
        self.next_token = token
        return events

    def _finish(self, reason: str, events: list[Event]) -> list[Event]:
        if tail := self._text.finish():
            events.append(Piece(tail))
        n_evaluated, prompt_ns = self._prompt_stats
        events.append(
            Done(
                reason=reason,
                prompt_eval_count=n_evaluated,
                prompt_eval_duration_ns=prompt_ns,
                eval_count=len(self._generated),
                eval_duration_ns=time.perf_counter_ns() - self._decode_started,
                generated=tuple(self._generated),
                context=tuple(self.session.tokens),
            )
        )
        return events
