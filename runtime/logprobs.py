"""Log probabilities of sampled tokens, as Ollama and OpenAI report them.

A token's log probability is taken from the distribution it was sampled from: the
logits divided by the temperature (when above 0, as Ollama's runner does since it
matched its sampling), through a log-softmax. With `top` > 0 the most likely tokens at
that position come along, most likely first.
"""

from __future__ import annotations

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
