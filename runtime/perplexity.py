"""Perplexity of a model over a text, scored the way `llama-perplexity -c N` scores it.

    engine = Engine.load("model.gguf")
    result = text_perplexity(engine, Path("wiki.test.raw").read_bytes().decode(), n_ctx=256)
    result.ppl, result.uncertainty, result.n_tokens, result.n_chunks

llama.cpp's method (tools/perplexity/perplexity.cpp, `perplexity()`):
- the file's text loses one trailing newline (`-f` does that) and is tokenized
  whole, with the vocabulary's special tokens added (BOS when it adds one) and
  special-token text not parsed;
- the tokens are cut into consecutive windows of n_ctx, as many as fit
  (`--chunks` caps the count); at least two windows are needed;
- each window is evaluated from an empty KV cache at positions 0..n_ctx-1, its
  first token replaced by BOS when the vocabulary adds BOS;
- only the second half is scored: the logits at positions n_ctx/2 .. n_ctx-2
  predict the tokens after them, n_ctx - n_ctx/2 - 1 tokens per window;
- PPL = exp(mean negative log-likelihood); the running estimate printed after
  window i is that over windows 1..i; the uncertainty is PPL times the standard
  error of the mean NLL.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from corral.runtime.arch.llama import Llama
from corral.runtime.engine import PREFILL_CHUNK, Engine
from corral.runtime.kv_cache import KVCache
from corral.runtime.tokenizer import Tokenizer

log = logging.getLogger(__name__)

DEFAULT_N_CTX = 512  # llama-perplexity's default context
LOGIT_BUDGET = 1 << 23  # float32 logits held at once (32 MiB): rows per block = budget // V


class PerplexityError(ValueError):
    """The text or the settings cannot be scored (too short, bad context size)."""


@dataclass(frozen=True)
class Perplexity:
    """The result of scoring a text; figures as llama-perplexity prints them."""

    ppl: float  # exp of the mean negative log-likelihood
    uncertainty: float  # ppl * standard error of the mean NLL ("PPL = x +/- u")
    nll: float  # mean negative log-likelihood (nats per token)
    n_tokens: int  # tokens scored
    n_chunks: int  # windows evaluated
    n_ctx: int  # tokens per window
    running: tuple[float, ...]  # the estimate after each window: llama.cpp's "[i]x"


def bos_for(tokenizer: Tokenizer) -> int | None:
    """The token that replaces each window's first token: BOS if the vocabulary adds one."""
    if tokenizer.add_eos:
        raise PerplexityError("the vocabulary adds EOS to every text; llama.cpp refuses it too")
    return tokenizer.bos_id if tokenizer.add_bos else None


def text_tokens(tokenizer: Tokenizer, text: str) -> list[int]:
    """The tokens llama-perplexity scores for `-f FILE` holding `text`: one trailing
    newline dropped, special tokens added, special-token text not parsed."""
    if text.endswith("\n"):
        text = text[:-1]
    return tokenizer.encode(text, add_special=True, parse_special=False)


def windows(
    tokens: Sequence[int], n_ctx: int, n_chunks: int | None = None, bos: int | None = None
) -> np.ndarray:
    """The windows llama-perplexity evaluates: (n_chunks, n_ctx) token ids, the first
    column set to `bos` when given. Raises PerplexityError when fewer than two fit."""
    if n_ctx < 4:
        raise PerplexityError(f"context of {n_ctx} tokens is too small: use at least 4")
    if len(tokens) < 2 * n_ctx:
        raise PerplexityError(
            f"the text is {len(tokens)} tokens; a context of {n_ctx} needs at least "
            f"{2 * n_ctx}: use a longer text or a smaller context"
        )
    available = len(tokens) // n_ctx
    count = available if n_chunks is None or n_chunks < 0 else min(n_chunks, available)
    if count < 1:
        raise PerplexityError(f"{n_chunks} chunks: score at least one")
    out = np.asarray(tokens[: count * n_ctx], dtype=np.int64).reshape(count, n_ctx)
    if bos is not None:
        out[:, 0] = bos
    return out  # (N, C)


def token_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """-log softmax(logits)[target] per row: logits (R, V) float32, targets (R,) -> (R,)
    float64. As llama.cpp: shifted by the row maximum, exponentials summed in float64."""
    top = logits.max(axis=1, keepdims=True)  # (R, 1)
    shifted = logits - top  # (R, V)
    sums = np.exp(shifted, out=shifted).sum(axis=1, dtype=np.float64)  # (R,)
    picked = np.take_along_axis(logits, targets[:, None], axis=1)[:, 0]  # (R,)
    return top[:, 0].astype(np.float64) + np.log(sums) - picked.astype(np.float64)


def window_nll(model: Llama, window: np.ndarray, cache: KVCache) -> np.ndarray:
    """Negative log-likelihoods (C - C/2 - 1,) of the second half of one window (C,),
    evaluated from an emptied `cache`; logits are computed a bounded block at a time."""
    n_ctx = window.shape[0]
    first = n_ctx // 2
    cache.truncate(0)
    hidden = np.concatenate(
        [model.hidden(window[i : i + PREFILL_CHUNK], cache) for i in range(0, n_ctx, PREFILL_CHUNK)]
    )  # (C, d)
    rows = max(1, LOGIT_BUDGET // model.config.vocab_size)
    nll = []
    for start in range(first, n_ctx - 1, rows):
        end = min(start + rows, n_ctx - 1)
        logits = model.logits(hidden[start:end])  # (R, V)
        nll.append(token_nll(logits, window[start + 1 : end + 1]))
    return np.concatenate(nll)


def perplexity(
    model: Llama,
    tokens: Sequence[int],
    n_ctx: int = DEFAULT_N_CTX,
    n_chunks: int | None = None,
    bos: int | None = None,
) -> Perplexity:
    """Score `tokens` (the whole tokenized text, see text_tokens) in windows of n_ctx,
    at most `n_chunks` of them; `bos` replaces each window's first token (see bos_for)."""
    chunks = windows(tokens, n_ctx, n_chunks, bos)  # (N, C)
    total = total_sq = 0.0
    count = 0
    running = []
    cache = model.new_cache(n_ctx)
    for i, window in enumerate(chunks):
        nll = window_nll(model, window, cache)
        total, total_sq, count = total + nll.sum(), total_sq + (nll**2).sum(), count + nll.size
        running.append(math.exp(total / count))
        log.info("perplexity: [%d/%d] %.4f", i + 1, len(chunks), running[-1])
    mean = total / count
    variance = total_sq / count - mean * mean
    stderr = math.sqrt(variance / (count - 1)) if variance > 0 and count > 1 else 0.0
    ppl = math.exp(mean)
    return Perplexity(
        ppl=ppl,
        uncertainty=stderr * ppl,
        nll=mean,
        n_tokens=count,
        n_chunks=len(chunks),
        n_ctx=n_ctx,
        running=tuple(running),
    )


def text_perplexity(
    engine: Engine, text: str, n_ctx: int = DEFAULT_N_CTX, n_chunks: int | None = None
) -> Perplexity:
    """Perplexity of `engine`'s model over `text`, as `llama-perplexity -f FILE -c n_ctx
    [--chunks n_chunks]` gives it for a FILE holding `text` (read it as bytes and decode,
    so that line endings stay as they are)."""
    tokens = text_tokens(engine.tokenizer, text)
    return perplexity(engine.model, tokens, n_ctx, n_chunks, bos_for(engine.tokenizer))
