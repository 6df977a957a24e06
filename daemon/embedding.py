"""Embeddings: hold the model, embed each input in a worker thread, normalise.

The engine gives the final-normed hidden state of the input's last token (a
decoder model has no pooling of its own: llama.cpp returns per-token
embeddings and Ollama answers with the last token's; a GGUF that declares
`<arch>.pooling_type` mean or cls is pooled that way). /api/embed and
/v1/embeddings L2-normalise it as Ollama does; the older /api/embeddings
does not.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from corral.daemon.errors import RequestError
from corral.daemon.prompts import encode
from corral.daemon.settings import GenerationSettings
from corral.daemon.state import DaemonState
from corral.daemon.worker import Emit, events_from_thread
from corral.registry.store import InstalledModel
from corral.runtime.engine import EmbeddingCancelled, Engine

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Embedded:
    vectors: tuple[np.ndarray, ...]  # one (d,) float32 per input, as the engine gives it
    prompt_tokens: int  # over every input, after truncation
    load_duration: int  # ns


async def embed_texts(
    state: DaemonState,
    model: InstalledModel,
    texts: Sequence[str],
    settings: GenerationSettings,
    keep_alive: float | None,
    *,
    truncate: bool,
) -> Embedded:
    """Embed every text with the model held once; a text too long for the context window
    is cut to fit if `truncate`, else refused (400)."""
    holding = state.scheduler.use(
        model.model_path, model.digest, settings.num_ctx, keep_alive, name=model.name
    )
    vectors: list[np.ndarray] = []
    tokens = 0
    with state.cancellable() as cancel:
        async with holding as lease:

            def work(emit: Emit[tuple[np.ndarray, int]]) -> None:
                log.info("%s: embedding %d input(s)", model.name, len(texts))
                try:
                    for i, text in enumerate(texts):
                        emit(_embed_one(lease.engine, i, text, truncate, cancel))
                except EmbeddingCancelled as e:  # the client went away, or the daemon stops
                    log.info("%s: input %d of %d: %s", model.name, i, len(texts), e)

            async for vector, count in events_from_thread(work, cancel, state.workers):
                vectors.append(vector)
                tokens += count
    if len(vectors) < len(texts):
        raise RequestError("corral is shutting down; the embeddings were not finished", 503)
    log.info("%s: embedded %d input(s), %d tokens", model.name, len(texts), tokens)
    return Embedded(tuple(vectors), tokens, lease.load_duration_ns)


def _embed_one(
    engine: Engine, i: int, text: str, truncate: bool, cancel: threading.Event
) -> tuple[np.ndarray, int]:
    """In the worker thread: tokenize (BOS included), fit to the window, embed. A text
    certainly too long is refused, or cut, before it is tokenized (it could be huge)."""
    limit, tokenizer = engine.num_ctx, engine.tokenizer
    if (fewest := tokenizer.fewest_tokens(text)) > limit:
        if not truncate:
            raise RequestError(
                f"input {i} is at least {fewest} tokens, more than the context window of "
                f"{limit}: shorten it, raise num_ctx, or allow truncation"
            )
        text = tokenizer.prefix_with_tokens(text, limit)
    ids = encode(engine, text, check_length=False)
    if not ids:
        raise RequestError(f"input {i} is empty: there is nothing to embed")
    if len(ids) > limit:
        if not truncate:
            raise RequestError(
                f"input {i} is {len(ids)} tokens, more than the context window of {limit}: "
                "shorten it, raise num_ctx, or allow truncation"
            )
        ids = ids[:limit]
    return engine.embed(ids, cancel), len(ids)


def normalized(vector: np.ndarray, dimensions: int | None = None) -> np.ndarray:
    """L2-normalised, as Ollama does; with `dimensions`, the leading ones, normalised again."""
    if not np.all(np.isfinite(vector)):
        raise RequestError("the embedding has NaN or infinite values: the model is broken", 500)
    vector = _unit(vector)
    if dimensions is not None and dimensions < vector.shape[0]:
        vector = _unit(vector[:dimensions])
    return vector


def check_dimensions(dimensions: int | None) -> None:
    if dimensions is not None and dimensions < 1:
        raise RequestError(f"'dimensions' must be 1 or more, got {dimensions}")


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


def floats(vector: np.ndarray) -> tuple[float, ...]:
    """A vector as JSON numbers."""
    return tuple(vector.tolist())
