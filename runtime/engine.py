"""The engine: a loaded model with its tokenizer and chat template, and generation.

    engine = Engine.load("model.gguf")
    session = engine.new_session()
    ids = engine.tokenizer.encode(engine.render_chat([{"role": "user", "content": "Hi"}]))
    for event in engine.generate(session, ids, SamplerOptions(temperature=0)):
        ...  # Piece(text) events, then one Done

Weights live in the engine and never change after load; a Session holds a
conversation's KV cache and the tokens in it, so consecutive turns only
process the tokens that are new.
"""

from __future__ import annotations

import copy
import logging
import os
import platform
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from corral.runtime.arch import architecture
from corral.runtime.arch.llama import Llama
from corral.runtime.arch.ops import rms_norm
from corral.runtime.chat_template import ChatTemplate
from corral.runtime.generation import Done, Event, Generation, Piece
from corral.runtime.gguf import GGUFFile
from corral.runtime.kv_cache import ContextFull, KVCache
from corral.runtime.model_info import ModelInfo
from corral.runtime.sampling import SamplerOptions
from corral.runtime.split import SplitLinear
from corral.runtime.tokenizer import Tokenizer, load_tokenizer

log = logging.getLogger(__name__)

PREFILL_CHUNK = 512  # tokens per batched prompt pass; bounds attention-score memory
DEFAULT_NUM_CTX = 4096
SPLIT_MIN_BYTES = 64 << 20  # float32 weights below this decode batches on one core
SPLIT_MACHINES = ("x86_64", "amd64")  # platform.machine(), lower case
# llama.cpp's `<arch>.pooling_type` (enum llama_pooling_type) -> how `embed` pools.
# A decoder model has none: llama.cpp then gives per-token embeddings and Ollama
# answers with the last token's, so "none" (and an absent key) pools the last token.
POOLINGS: dict[int, str] = {0: "last", 1: "mean", 2: "first", 3: "last"}
POOL_ROWS: dict[str, slice] = {"last": slice(-1, None), "first": slice(0, 1), "mean": slice(None)}


class EmbeddingCancelled(Exception):
    """`Engine.embed` was told to stop before it finished."""


class Session:
    """One conversation's run state: its KV cache and the tokens the cache holds."""

    def __init__(self, cache: KVCache) -> None:
        self.cache = cache
        self.tokens: list[int] = []

    @property
    def n_ctx(self) -> int:
        return self.cache.n_ctx

    def new_tokens(self, prompt: Sequence[int]) -> int:
        """How many of `prompt`'s tokens a generation from it runs: those after the
        prefix the cache already holds, and at least the last (it gives the logits)."""
        return len(prompt) - min(_common_prefix(self.tokens, prompt), len(prompt) - 1)

    def begin(self, prompt: Sequence[int]) -> list[int]:
        """Keep only the prefix of the cache that `prompt` shares (short of its last
        token); return the prompt's tokens still to run."""
        reuse = len(prompt) - self.new_tokens(prompt)
        self.cache.truncate(reuse)
        self.tokens = list(prompt[:reuse])
        return list(prompt[reuse:])


class Engine:
    """A model ready to generate: weights, tokenizer, chat template, metadata."""

    def __init__(
        self,
        model: Llama,
        tokenizer: Tokenizer,
        template: ChatTemplate,
        info: ModelInfo,
        num_ctx: int,
        pooling: str = "last",
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.template = template
        self.info = info
        self.num_ctx = num_ctx
        self.pooling = pooling  # how `embed` pools token states: "last", "mean" or "first"

    @classmethod
    def load(
        cls,
        path: str | Path,
        num_ctx: int | None = None,
        split: bool | None = None,
        bf16: bool = True,
    ) -> Engine:
        """Open a GGUF file, dequantize its weights, build the tokenizer.

        `bf16`: keep a quantized file's matrices as bfloat16 (runtime/bf16.py), else
        float32. `split`: fork a helper that shares the float32 matrices, so that
        batched decoding runs on two cores (runtime/split.py); by default when there
        are two cores and those matrices are big enough for it to pay."""
        started = time.perf_counter()
        with GGUFFile.open(path) as gguf:
            info = ModelInfo.from_gguf(gguf)
            model_cls = architecture(info.architecture)
            tokenizer = load_tokenizer(gguf.metadata)
            model = model_cls.from_gguf(gguf, bf16)
            template = ChatTemplate(
                gguf.metadata.get("tokenizer.chat_template"),
                bos_token=_token_text(tokenizer, tokenizer.bos_id),
                eos_token=_token_text(tokenizer, tokenizer.eos_id),
            )
            pooling_type = int(gguf.metadata.get(f"{info.architecture}.pooling_type", 0))
        if use_split(model, split):
            try:
                model.linear = SplitLinear(float32_matrices(model)).linear
            except OSError as e:
                log.warning("batched decoding stays on one core: cannot start a helper: %s", e)
        n_ctx = min(num_ctx or DEFAULT_NUM_CTX, info.context_length)
        log.info("loaded %s in %.2fs", path, time.perf_counter() - started)
        return cls(model, tokenizer, template, info, n_ctx, POOLINGS.get(pooling_type, "last"))

    def with_num_ctx(self, num_ctx: int) -> Engine:
        """This engine, the same weights, with another context window (capped at the
        trained one) for the sessions it makes and the prompts fitted to it: a request
        may use less of a loaded model's window without loading it again."""
        view = copy.copy(self)
        view.num_ctx = min(num_ctx, self.info.context_length)
        return view

    def new_session(self, num_ctx: int | None = None) -> Session:
        return Session(self.model.new_cache(num_ctx or self.num_ctx))

    def new_sessions(self, n: int, num_ctx: int | None = None) -> list[Session]:
        """`n` sessions whose caches share one pool, so that `step` attends for any
        of them together in one go (sessions from `new_session` attend one by one)."""
        pool = self.model.new_pool(n, num_ctx or self.num_ctx)
        return [Session(cache) for cache in pool.new_caches()]

    def render_chat(
        self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True
    ) -> str:
        return self.template.render(messages, add_generation_prompt=add_generation_prompt)

    # ----- embeddings ----------------------------------------------------

    def embed(self, tokens: Sequence[int], cancel: threading.Event | None = None) -> np.ndarray:
        """One embedding (d_model,) float32 for `tokens`: the final-normed hidden states
        (what the output layer reads) pooled as `self.pooling` says. Not normalised.

        Runs in a cache of its own, so no session is touched. `cancel`, checked between
        chunks of the input, stops a long one (EmbeddingCancelled).
        """
        if not tokens:
            raise ValueError("nothing to embed: the input has no tokens")
        if len(tokens) > self.num_ctx:
            raise ContextFull(
                f"the input is {len(tokens)} tokens, more than the context window of "
                f"{self.num_ctx}: shorten it or raise num_ctx"
            )
        cache = self.model.new_cache(len(tokens))
        chunks = []
        for i in range(0, len(tokens), PREFILL_CHUNK):
            if cancel is not None and cancel.is_set():
                raise EmbeddingCancelled(f"embedding cancelled after {i} of {len(tokens)} tokens")
            chunks.append(self.model.hidden(np.array(tokens[i : i + PREFILL_CHUNK]), cache))
        states = np.concatenate(chunks)  # (T, d)
        pooled = states[POOL_ROWS[self.pooling]]  # (N, d)
        normed = rms_norm(pooled, self.model.weights.out_norm, self.model.config.rms_eps)
        return normed.mean(axis=0, dtype=np.float32)  # (d,): mean of the normed states

    # ----- generation ----------------------------------------------------

    def generate(
        self,
        session: Session,
        prompt: Sequence[int],
        options: SamplerOptions | None = None,
        num_predict: int = -1,
        stop: Sequence[str] = (),
        cancel: threading.Event | None = None,
    ) -> Iterator[Piece | Done]:
        """Process `prompt` (token ids) and yield the continuation as text pieces.

        Stops at an end-of-generation token, a stop string, `num_predict`
        tokens, a full context window or when `cancel` is set.
        """
        gen = self.start_generation(session, prompt, options, num_predict, stop, cancel)
        yield from self.prefill(gen)
        while tokens := gen.next_input():
            logits = self.model.forward(np.array(tokens), session.cache)  # (V,)
            yield from gen.ran(tokens, logits) or ()

    def start_generation(
        self,
        session: Session,
        prompt: Sequence[int],
        options: SamplerOptions | None = None,
        num_predict: int = -1,
        stop: Sequence[str] = (),
        cancel: threading.Event | None = None,
        prefill_chunk: int = PREFILL_CHUNK,
        num_ctx: int | None = None,
        logprobs: int | None = None,
    ) -> Generation:
        """A Generation to drive with `step([...])` (or `prefill(gen)` for its whole
        prompt first); its prompt runs `prefill_chunk` tokens a step. `num_ctx`: a
        smaller context window than the session's, for this generation only;
        `logprobs`: each token's log probability with that many of the most likely."""
        if not prompt:
            raise ValueError("the prompt is empty: nothing to continue from")
        window = min(session.n_ctx, num_ctx or session.n_ctx)
        if len(prompt) >= window:
            raise ContextFull(
                f"the prompt is {len(prompt)} tokens, more than the context window of "
                f"{window}: shorten it or raise num_ctx"
            )
        return Generation(
            session,
            self.tokenizer,
            prompt,
            prefill_chunk,
            options,
            num_predict,
            stop,
            cancel,
            n_ctx=window,
            logprobs=logprobs,
        )

    def prefill(self, generation: Generation) -> list[Event]:
        """Run the generation's whole prompt; the events of its first token."""
        while (events := self.step([generation])[0]) is None:
            pass
        return events

    def step(self, generations: Sequence[Generation]) -> list[list[Event] | None]:
        """One forward pass for all `generations` (each in its own session): each decoding
        one advances by a token, each still in its prompt runs the prompt's next chunk.

        Returns each one's events, in order: None for one whose prompt goes on, an
        empty list for one that had already finished.
        """
        inputs = [(g, tokens) for g in generations if (tokens := g.next_input())]
        if not inputs:
            return [[] for _ in generations]
        hidden = self.model.hidden_batch(
            [np.array(tokens) for _, tokens in inputs], [g.session.cache for g, _ in inputs]
        )  # (B, d): each segment's last hidden state
        wanted = [b for b, (g, tokens) in enumerate(inputs) if g.wants_logits(len(tokens))]
        logits = dict(zip(wanted, self.model.logits(hidden[wanted]) if wanted else [], strict=True))
        events = {id(g): g.ran(tokens, logits.get(b)) for b, (g, tokens) in enumerate(inputs)}
        return [events.get(id(g), []) for g in generations]


def use_split(model: Llama, split: bool | None) -> bool:
    """Whether batched decoding runs on two cores: by default when there are two and
    the weights are big enough for it to pay. Only on x86-64, whose stores other cores
    see in order: the hand-over (runtime/split_protocol.py) has no memory barriers."""
    if not hasattr(os, "fork") or platform.machine().lower() not in SPLIT_MACHINES:
        return False
    if not float32_matrices(model):
        return False  # bfloat16 matrices run on every core already (runtime/bf16.py)
    if split is None:
        nbytes = sum(m.nbytes for m in float32_matrices(model))
        return (os.cpu_count() or 1) >= 2 and nbytes >= SPLIT_MIN_BYTES
    return split


def float32_matrices(model: Llama) -> list[np.ndarray]:
    """The model's float32 weight matrices: those a split helper can share."""
    return [m for m in model.matrices() if isinstance(m, np.ndarray)]


def _token_text(tokenizer: Tokenizer, token_id: int | None) -> str:
    return "" if token_id is None else tokenizer.decode([token_id])


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n
