"""Log probabilities of sampled tokens, as Ollama and OpenAI report them.

A token's log probability is taken from the distribution it was sampled from: the
logits divided by the temperature (when above 0, as Ollama's runner does since it
matched its sampling), through a log-softmax. With `top` > 0 the most likely tokens at
that position come along, most likely first.
"""

from __future__ import annotations

import codecs
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

MAX_TOP = 20  # Ollama's and OpenAI's limit on top_logprobs


@dataclass(frozen=True)
class TokenLogprob:
    token: str  # the token's text (a partial UTF-8 character shows as U+FFFD)
    token_bytes: bytes
    logprob: float


@dataclass(frozen=True)
class Logprob:
    """A sampled token's log probability and, if asked, the most likely alternatives."""

    chosen: TokenLogprob
    top: tuple[TokenLogprob, ...] = ()


def log_softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    """(V,) float64 log probabilities of `logits` (V,) at `temperature` (0: as they are)."""
    scaled = logits.astype(np.float64) / (temperature if temperature > 0 else 1.0)  # (V,)
    shifted = scaled - scaled.max()
    return shifted - np.log(np.exp(shifted).sum())


def logprob_of(
    logits: np.ndarray,
    token: int,
    top: int,
    temperature: float,
    token_bytes: Callable[[int], bytes],
) -> Logprob:
    """The log probability of `token` under `logits` (V,), with the `top` most likely."""
    logp = log_softmax(logits, temperature)  # (V,)

    def entry(t: int) -> TokenLogprob:
        raw = token_bytes(t)
        return TokenLogprob(raw.decode("utf-8", errors="replace"), raw, float(logp[t]))

    best: tuple[TokenLogprob, ...] = ()
    if top > 0:
        candidates = np.argpartition(-logp, min(top, logp.shape[0]) - 1)[:top]  # (top,)
        ranked = candidates[np.argsort(-logp[candidates], kind="stable")]
        best = tuple(entry(int(t)) for t in ranked)
    return Logprob(entry(token), best)


class PendingLogprobs:
    """Log probabilities waiting for their tokens' text to be shown: a piece of text
    carries those of the tokens it completes, so text and log probabilities stay
    together when text is held back (a partial UTF-8 character, a possible stop string).

    Positions are characters of the text, decoded from the tokens' bytes as the text
    stream decodes them; a token holding only the start of a character ends where the
    character does."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending: deque[tuple[Logprob, int, int]] = deque()  # (logprob, start, end)
        self._open: list[Logprob] = []  # tokens whose characters are not complete yet
        self._open_start = 0
        self._chars = 0  # characters of the tokens added
        self._shown = 0  # characters of the text shown

    def add(self, logprob: Logprob) -> None:
        if not self._open:
            self._open_start = self._chars  # where the open tokens' text starts
        self._open.append(logprob)
        self._chars += len(self._decoder.decode(logprob.chosen.token_bytes))
        if self._chars > self._open_start or not logprob.chosen.token_bytes:
            self._pending.extend((lp, self._open_start, self._chars) for lp in self._open)
            self._open.clear()

    def shown(self, text: str, cut: bool = False, last: bool = False) -> tuple[Logprob, ...]:
        """Those of the tokens `text`, just shown, completes. `cut`: a stop string ends the
        answer here, so a token it shows the start of counts too (as in Ollama); `last`:
        the answer ends here, so every one left comes along."""
        self._shown += len(text)
        if last:
            self._pending.extend((lp, self._chars, self._chars) for lp in self._open)
            self._open.clear()
        done: list[Logprob] = []
        while self._pending:
            logprob, start, end = self._pending[0]
            if not (last or end <= self._shown or (cut and start < self._shown)):
                break
            done.append(logprob)
            self._pending.popleft()
        if cut:  # the rest is inside the stop string: never shown
            self._pending.clear()
            self._open.clear()
        return tuple(done)
