"""Engine.embed: the final-normed hidden state the output layer reads, pooled as the GGUF says."""

from __future__ import annotations

import threading
from pathlib import Path

import gguf
import numpy as np
import pytest

from corral.runtime.engine import PREFILL_CHUNK, EmbeddingCancelled, Engine
from corral.runtime.kv_cache import ContextFull
from tiny import write_tiny_llama


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    return Engine.load(write_tiny_llama(tmp_path_factory.mktemp("m") / "tiny.gguf"))


def test_last_token_embedding_is_what_the_output_layer_reads(engine: Engine) -> None:
    ids = engine.tokenizer.encode("the cat sat on the mat")
    embedding = engine.embed(ids)
    assert embedding.shape == (engine.info.embedding_length,)
    assert embedding.dtype == np.float32
    logits = engine.model.forward(np.array(ids), engine.model.new_cache(len(ids)))  # (V,)
    np.testing.assert_allclose(embedding @ engine.model.weights.output.T, logits, atol=1e-4)


def test_embedding_depends_on_the_whole_input_and_touches_no_session(engine: Engine) -> None:
    session = engine.new_session()
    a = engine.embed(engine.tokenizer.encode("a red fox"))
    b = engine.embed(engine.tokenizer.encode("a red box"))
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(a, engine.embed(engine.tokenizer.encode("a red fox")))
    assert session.tokens == [] and session.cache.length == 0


def test_mean_pooling_averages_every_position(engine: Engine) -> None:
    """In a causal model position i sees tokens 0..i: the mean over positions is the mean
    of the last-token embeddings of every prefix."""
    ids = engine.tokenizer.encode("hello there")
    prefixes = np.stack([engine.embed(ids[: i + 1]) for i in range(len(ids))])
    mean = _with_pooling(engine, "mean")
    np.testing.assert_allclose(mean.embed(ids), prefixes.mean(axis=0), atol=1e-5)
    first = _with_pooling(engine, "first")
    np.testing.assert_allclose(first.embed(ids), prefixes[0], atol=1e-5)


@pytest.mark.parametrize(
    ("pooling_type", "pooling"),
    [(None, "last"), (gguf.PoolingType.MEAN, "mean"), (gguf.PoolingType.CLS, "first")],
)
def test_pooling_type_is_read_from_the_gguf(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    pooling_type: gguf.PoolingType | None,
    pooling: str,
) -> None:
    """A decoder model has no `<arch>.pooling_type`; embedding models declare one."""
    if pooling_type is not None:  # write the key along with the model's name
        add_name = gguf.GGUFWriter.add_name

        def add_name_and_pooling(writer: gguf.GGUFWriter, name: str) -> None:
            add_name(writer, name)
            writer.add_pooling_type(pooling_type)

        monkeypatch.setattr(gguf.GGUFWriter, "add_name", add_name_and_pooling)
    assert Engine.load(write_tiny_llama(tmp_path / "m.gguf")).pooling == pooling


def test_empty_and_too_long_inputs_are_refused(engine: Engine) -> None:
    with pytest.raises(ValueError, match="no tokens"):
        engine.embed([])
    with pytest.raises(ContextFull, match="context window"):
        engine.embed([5] * (engine.num_ctx + 1))


def _with_pooling(engine: Engine, pooling: str) -> Engine:
    return Engine(
        engine.model, engine.tokenizer, engine.template, engine.info, engine.num_ctx, pooling
    )


class CancelledAtSecondCheck(threading.Event):
    """A cancel event a client sets while the first chunk of its input runs."""

    def __init__(self) -> None:
        super().__init__()
        self.checks = 0

    def is_set(self) -> bool:
        self.checks += 1
        if self.checks == 2:
            self.set()
        return super().is_set()


def test_a_long_embedding_stops_between_chunks_when_cancelled(tmp_path: Path) -> None:
    path = write_tiny_llama(tmp_path / "long.gguf", context_length=4096)
    engine = Engine.load(path, num_ctx=2048, split=False)
    ids = [7] * (PREFILL_CHUNK + 100)
    with pytest.raises(EmbeddingCancelled, match=f"after {PREFILL_CHUNK} of {len(ids)} tokens"):
        engine.embed(ids, CancelledAtSecondCheck())
    assert engine.embed(ids, threading.Event()).shape == (engine.info.embedding_length,)
