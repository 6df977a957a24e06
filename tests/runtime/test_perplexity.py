"""Perplexity as `llama-perplexity -c N` scores it (runtime/perplexity.py).

Fast tests run a tiny random-weight llama and check the windows, the BOS handling and
the scored half against a direct computation: every window run token by token through
`Llama.forward`, log-softmax in float64 over the whole vocabulary.

Slow tests compare the real models with llama-perplexity's figures over the GPL-3 text
recorded in tests/data/perplexity_refs.json (see its "command"): within 1% of llama.cpp
with its default settings (issue 3), and within 0.1% of llama.cpp's float math (an
all-F32 copy of the same file, f32 KV cache, no flash attention). They score the first
`TEST_CHUNKS` windows and compare with llama.cpp's running estimate after as many.
The quantization test (issue 4) quantizes SmolLM2 to Q4_K_M with corral and compares
its perplexity with that of llama-quantize's Q4_K_M of the same source.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import assets
from corral.runtime import perplexity as perplexity_module
from corral.runtime.arch.llama import Llama
from corral.runtime.engine import Engine
from corral.runtime.perplexity import (
    Perplexity,
    PerplexityError,
    bos_for,
    perplexity,
    text_perplexity,
    text_tokens,
    windows,
)
from corral.runtime.quantize import quantize_gguf
from tiny import tiny_vocab, write_tiny_llama

VOCAB = len(tiny_vocab()[0])
REFERENCE = json.loads((Path(__file__).parent.parent / "data" / "perplexity_refs.json").read_text())
REAL: dict[str, Callable[[], Path]] = {
    "smollm2": assets.smollm2_gguf,
    "qwen25_coder": assets.qwen25_coder_gguf,
    "gemma3": assets.gemma3_gguf,
}
TEST_CHUNKS = {"smollm2": 16, "qwen25_coder": 8, "gemma3": 8}  # of the recorded 16
LLAMA_CPP_RTOL = 0.01  # issue 3: within 1% of llama-perplexity (default settings)
EXACT_RTOL = 0.001  # float math on both sides; gemma's GELU differs by about 2e-5
BF16_RTOL = 0.005  # bfloat16 weights (runtime/bf16.py) against float math


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    path = write_tiny_llama(tmp_path_factory.mktemp("ppl") / "tiny.gguf", context_length=1024)
    return Engine.load(path)


def random_ids(n: int, seed: int = 0) -> list[int]:
    return [int(t) for t in np.random.default_rng(seed).integers(3, VOCAB, n)]


def direct_nll(model: Llama, window: list[int]) -> np.ndarray:
    """-log p(window[j+1] | window[:j+1]) for j in the second half, j < len - 1: one token
    at a time through `forward`, log-softmax in float64."""
    cache = model.new_cache(len(window))
    out = []
    for j, token in enumerate(window[:-1]):
        logits = model.forward(np.array([token]), cache).astype(np.float64)  # (V,)
        if j >= len(window) // 2:
            log_z = np.log(np.sum(np.exp(logits - logits.max()))) + logits.max()
            out.append(log_z - logits[window[j + 1]])
    return np.array(out)


def direct_perplexity(model: Llama, ids: list[int], n_ctx: int, bos: int | None) -> dict:
    """ppl, uncertainty and running estimates the long way, straight from the definition."""
    nll, running = np.empty(0), []
    for start in range(0, len(ids) - n_ctx + 1, n_ctx):
        window = list(ids[start : start + n_ctx])
        if bos is not None:
            window[0] = bos
        nll = np.concatenate([nll, direct_nll(model, window)])
        running.append(math.exp(nll.mean()))
    ppl = math.exp(nll.mean())
    return {"ppl": ppl, "u": ppl * nll.std() / math.sqrt(nll.size - 1), "running": running}


# ----- windows --------------------------------------------------------------------


def test_windows_are_consecutive_slices_with_bos_first() -> None:
    ids = list(range(100, 1100))
    cut = windows(ids, 256)
    assert cut.shape == (3, 256)  # 1000 // 256; the last 232 tokens are not scored
    assert cut[1].tolist() == ids[256:512]
    with_bos = windows(ids, 256, bos=7)
    assert with_bos[:, 0].tolist() == [7, 7, 7]
    assert with_bos[2, 1:].tolist() == ids[513:768]
    assert windows(ids, 256, n_chunks=2).shape == (2, 256)
    assert windows(ids, 256, n_chunks=50).shape == (3, 256)  # capped, as --chunks is
    assert ids[256] == 356  # the caller's list is left alone


def test_too_short_a_text_is_a_clear_error() -> None:
    with pytest.raises(PerplexityError, match=r"511 tokens; a context of 256 needs at least 512"):
        windows(list(range(511)), 256)
    with pytest.raises(PerplexityError, match=r"context of 2 tokens is too small"):
        windows(list(range(100)), 2)


# ----- against the direct computation ----------------------------------------------


@pytest.mark.parametrize("bos", [None, 0])
def test_matches_the_direct_computation(engine: Engine, bos: int | None) -> None:
    ids = random_ids(3 * 24 + 10)
    result = perplexity(engine.model, ids, n_ctx=24, bos=bos)
    expected = direct_perplexity(engine.model, ids, 24, bos)
    assert isinstance(result, Perplexity)
    assert (result.n_chunks, result.n_ctx, result.n_tokens) == (3, 24, 3 * 11)
    assert result.ppl == pytest.approx(expected["ppl"], rel=1e-5)
    assert result.uncertainty == pytest.approx(expected["u"], rel=1e-4)
    assert result.running == pytest.approx(expected["running"], rel=1e-5)
    assert result.nll == pytest.approx(math.log(expected["ppl"]), rel=1e-5)


def test_bos_changes_the_figure(engine: Engine) -> None:
    """The BOS replacement is really applied (a random model cares about its first token)."""
    ids = random_ids(64, seed=3)
    assert perplexity(engine.model, ids, 16, bos=0).ppl != pytest.approx(
        perplexity(engine.model, ids, 16).ppl, rel=1e-6
    )


def test_long_windows_and_small_logit_blocks(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A window longer than one prefill pass (512), logits a few rows at a time."""
    ids = random_ids(2 * 600, seed=1)
    monkeypatch.setattr(perplexity_module, "LOGIT_BUDGET", 5 * VOCAB)  # 5 rows per block
    result = perplexity(engine.model, ids, n_ctx=600)
    model = engine.model
    nll = []
    for window in (ids[:600], ids[600:]):
        logits = model.logits(model.hidden(np.array(window), model.new_cache(600)))  # (C, V)
        x = logits[300:599].astype(np.float64)
        log_z = np.log(np.exp(x - x.max(1, keepdims=True)).sum(1)) + x.max(1)
        nll.append(log_z - x[np.arange(299), window[301:600]])
    assert result.n_tokens == 2 * 299
    assert result.ppl == pytest.approx(math.exp(np.concatenate(nll).mean()), rel=1e-5)


# ----- text and BOS handling as llama-perplexity does ----------------------------------


def test_text_tokens_drop_one_trailing_newline(engine: Engine) -> None:
    tok = engine.tokenizer
    assert text_tokens(tok, "the cat\n\n") == tok.encode("the cat\n", add_special=False)
    assert text_tokens(tok, "<|im_start|>") == tok.encode("<|im_start|>", parse_special=False)
    assert text_tokens(tok, "<|im_start|>") != tok.encode("<|im_start|>", parse_special=True)
    assert bos_for(tok) is None  # tiny.py's vocabulary adds no BOS


def test_text_with_a_vocab_that_adds_bos(tmp_path: Path) -> None:
    engine = Engine.load(write_tiny_llama(tmp_path / "bos.gguf", seed=2, add_bos=True))
    assert bos_for(engine.tokenizer) == 0
    text = "the theory that the atheists rest on " * 4 + "\n"
    ids = engine.tokenizer.encode(text[:-1], add_special=False)
    assert len(ids) >= 32
    result = text_perplexity(engine, text, n_ctx=16)
    expected = direct_perplexity(engine.model, [0, *ids], 16, bos=0)
    assert result.n_chunks == (len(ids) + 1) // 16
    assert result.ppl == pytest.approx(expected["ppl"], rel=1e-5)


# ----- the real models against llama-perplexity (slow) ---------------------------------


def gpl3_ids(engine: Engine) -> list[int]:
    text = assets.gpl3_text()  # skips when absent
    if hashlib.sha256(text.encode("utf-8")).hexdigest() != REFERENCE["text"]["sha256"]:
        pytest.skip(f"{assets.GPL3_PATH} is not the text the references were made from")
    return text_tokens(engine.tokenizer, text)


@pytest.fixture(scope="module", params=sorted(REAL))
def real(request: pytest.FixtureRequest) -> tuple[str, Engine]:
    return request.param, Engine.load(REAL[request.param]())


@pytest.mark.slow
def test_real_model_perplexity_matches_llamacpp(real: tuple[str, Engine]) -> None:
    """As corral runs it (bfloat16 matrices): within 1% of llama-perplexity's default
    settings, and within 0.5% of float math on every chunk."""
    name, engine = real
    ref, n = REFERENCE["models"][name], TEST_CHUNKS[name]
    result = perplexity(
        engine.model, gpl3_ids(engine), REFERENCE["n_ctx"], n, bos_for(engine.tokenizer)
    )
    assert result.n_chunks == n
    assert result.ppl == pytest.approx(ref["default"]["running"][n - 1], rel=LLAMA_CPP_RTOL)
    assert result.running == pytest.approx(ref["exact"]["running"][:n], rel=BF16_RTOL)
    if n == REFERENCE["n_chunks"]:
        assert result.uncertainty == pytest.approx(ref["default"]["uncertainty"], rel=0.02)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REAL))
def test_real_model_float32_perplexity_is_llamacpps_float_math(name: str) -> None:
    """With float32 matrices, corral's math is llama.cpp's own float math (f32 weights
    and KV cache) to 0.1% on every chunk."""
    engine = Engine.load(REAL[name](), bf16=False, split=False)
    ref, n = REFERENCE["models"][name], TEST_CHUNKS[name]
    result = perplexity(
        engine.model, gpl3_ids(engine), REFERENCE["n_ctx"], n, bos_for(engine.tokenizer)
    )
    assert result.running == pytest.approx(ref["exact"]["running"][:n], rel=EXACT_RTOL)


@pytest.mark.slow
def test_corral_q4_k_m_perplexity_matches_llama_quantize(tmp_path: Path) -> None:
    """Issue 4 on SmolLM2: corral's Q4_K_M scores within 1% of llama-quantize's Q4_K_M of
    the same source, both scored by float math (corral here; llama-perplexity on an all-F32
    copy of llama-quantize's file, f32 KV cache, for the reference). llama-perplexity's
    default settings score both files 1% higher than float math does (8-bit activations),
    which is why the float-math figure is the one to compare a float32 runtime with.

    The recorded source is the all-F32 copy of the shipped Q4_1 file, which holds the
    file's dequantized values; quantizing the shipped file itself gives the same tensors
    without writing the 540 MB copy here."""
    ref = REFERENCE["quantize"]["smollm2"]["llama_quantize"]
    ours = tmp_path / "smollm2.Q4_K_M.gguf"
    quantize_gguf(assets.smollm2_gguf(), ours, "Q4_K_M")
    engine = Engine.load(ours)
    n = REFERENCE["n_chunks"]
    ids = gpl3_ids(engine)
    result = perplexity(engine.model, ids, REFERENCE["n_ctx"], n, bos_for(engine.tokenizer))
    assert result.ppl == pytest.approx(ref["llama_perplexity_exact"]["ppl"], rel=LLAMA_CPP_RTOL)
