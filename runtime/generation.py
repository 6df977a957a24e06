"""The decoding state of one request, advanced one token at a time.

A `Generation` decides the next token and when to stop; whoever drives it runs
the model (`Engine.step`, which runs several generations in one forward pass):

    tokens = gen.next_input()     # the prompt's next chunk, or the token just sampled
    <run tokens through the model in gen.session's cache, giving the last logits>
    events = gen.ran(tokens, logits)  # None while the prompt goes on, else Piece(...)s,
                                      # and Done(...) at the end
    ... until gen.next_input() is empty

The prompt is processed in chunks of `prefill_chunk` tokens, after the prefix the
session's cache already holds (at least its last token runs, for the logits).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from corral.runtime.kv_cache import KVCache
from corral.runtime.logprobs import Logprob, PendingLogprobs, logprob_of
from corral.runtime.sampling import Sampler, SamplerOptions
from corral.runtime.stream import TextStream
from corral.runtime.tokenizer import Tokenizer


@dataclass(frozen=True)
class Piece:
    """A piece of generated text (never a partial UTF-8 character), with the log
    probabilities of the tokens it completes when they were asked for."""

    text: str
    logprobs: tuple[Logprob, ...] = ()


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


class Conversation(Protocol):
    """What a generation needs of its session (the engine's Session)."""

    cache: KVCache
    tokens: list[int]  # the tokens the cache holds

    def begin(self, prompt: Sequence[int]) -> list[int]: ...


class Generation:
    """Sampler, text stream and counters of one request in one session."""

    def __init__(
        self,
        session: Conversation,
        tokenizer: Tokenizer,
        prompt: Sequence[int],
        prefill_chunk: int,  # prompt tokens run per step
        options: SamplerOptions | None = None,
        num_predict: int = -1,
        stop: Sequence[str] = (),
        cancel: threading.Event | None = None,
        n_ctx: int | None = None,  # the context window, if smaller than the session's cache
        logprobs: int | None = None,  # None: none; n: each token's, with the n most likely
    ) -> None:
        self.session = session
        self._n_ctx = min(session.cache.n_ctx, n_ctx or session.cache.n_ctx)
        self._tokenizer = tokenizer
        self._prompt = list(prompt)
        self._prefill_chunk = prefill_chunk
        self._sampler = Sampler(options or SamplerOptions())
        self._history = list(prompt)
        self._text = TextStream(tokenizer.token_bytes, stop)
        self._num_predict = num_predict
        self._cancel = cancel
        self._generated: list[int] = []
        self._answer: list[str] = []  # the text pieces given out
        self._logprobs = logprobs
        self._pending_logprobs = PendingLogprobs()  # of tokens whose text is held back
        self._pending: list[int] | None = None  # prompt tokens still to run, once begun
        self._prompt_tokens = 0  # prompt tokens evaluated (after the cached prefix)
        self._prompt_ns = 0
        self._prefill_started = 0
        self._decode_started = 0
        self.next_token: int | None = None  # the token to run next; None once finished

    @property
    def in_prompt(self) -> bool:
        """Whether some of the prompt is still to run."""
        return self._pending is None or bool(self._pending)

    def next_input(self) -> list[int]:
        """The tokens to run next: the prompt's next chunk (the first call brings the
        session's cache back to the prefix it shares with the prompt), the token just
        sampled, or none once finished."""
        if self._pending is None:
            self._prefill_started = time.perf_counter_ns()
            self._pending = self.session.begin(self._prompt)
            self._prompt_tokens = len(self._pending)
        if self._pending:
            return self._pending[: self._prefill_chunk]
        return [] if self.next_token is None else [self.next_token]

    def wants_logits(self, n_tokens: int) -> bool:
        """Whether running `n_tokens` of `next_input()` needs their last logits: always,
        except for a chunk that leaves some of the prompt still to run."""
        return not self._pending or n_tokens >= len(self._pending)

    def ran(self, tokens: Sequence[int], logits: np.ndarray | None) -> list[Event] | None:
        """`tokens` (from `next_input()`) have been run through the model in the session's
        cache, the last giving `logits` (V,) (None if `wants_logits` said no). Returns
        None while the prompt goes on, else the events of the token sampled."""
        if self._pending:
            self.session.tokens.extend(tokens)
            del self._pending[: len(tokens)]
            if self._pending:
                return None
            self._decode_started = time.perf_counter_ns()
            self._prompt_ns = self._decode_started - self._prefill_started
        else:
            assert self.next_token is not None, "ran() after the generation finished"
            self.session.tokens.append(self.next_token)
        assert logits is not None
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
        shown = not self._tokenizer.is_control(token)  # control tokens are not in the text
        if self._logprobs is not None and shown:
            self._pending_logprobs.add(self._logprob(logits, token))
        if shown and (piece := self._text.push(token)):
            events.append(self._piece(piece, cut=self._text.stopped))
            self._answer.append(piece)
        if self._text.stopped:
            return self._finish("stop", events, context=self._context_without_stop())
        if 0 <= self._num_predict <= len(self._generated):  # not run: llama.cpp's way too
            return self._finish("length", events, unrun=(token,))
        if self.session.cache.length >= self._n_ctx:
            return self._finish("length", events)
        self.next_token = token
        return events

    def _logprob(self, logits: np.ndarray, token: int) -> Logprob:
        top, temperature = self._logprobs or 0, self._sampler.options.temperature
        return logprob_of(logits, token, top, temperature, self._tokenizer.token_bytes)

    def _piece(self, text: str, cut: bool = False, last: bool = False) -> Piece:
        """A piece with the log probabilities of the tokens it completes."""
        return Piece(text, self._pending_logprobs.shown(text, cut, last))

    def _context_without_stop(self) -> tuple[int, ...]:
        """After a stop string: the prompt and the answer as shown, no part of the stop
        string (Ollama tokenizes the text again): the generated tokens whose text the
        answer starts with (those past the stop string, or holding a character it cut,
        dropped from the end), then the rest of the answer (a token cut by it) encoded."""
        answer, kept = "".join(self._answer), list(self._generated)
        while kept and not answer.startswith(text := self._tokenizer.decode(kept, special=False)):
            kept.pop()
        rest = answer[len(text) :] if kept else answer
        tail = self._tokenizer.encode(rest, add_special=False, parse_special=False) if rest else []
        return (*self._prompt, *kept, *tail)

    def _finish(
        self,
        reason: str,
        events: list[Event],
        unrun: tuple[int, ...] = (),
        context: tuple[int, ...] | None = None,
    ) -> list[Event]:
        """End with Done; `unrun`: generated tokens the cache does not hold, which the
        context still ends with (a next turn's prompt runs them); `context`: another
        context than the session's tokens and `unrun`."""
        if tail := self._text.finish():
            events.append(self._piece(tail, last=True))
        events.append(
            Done(
                reason=reason,
                prompt_eval_count=self._prompt_tokens,
                prompt_eval_duration_ns=self._prompt_ns,
                eval_count=len(self._generated),
                eval_duration_ns=time.perf_counter_ns() - self._decode_started,
                generated=tuple(self._generated),
                context=(*self.session.tokens, *unrun) if context is None else context,
            )
        )
        return events
