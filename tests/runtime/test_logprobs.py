"""Log probabilities of sampled tokens: a log-softmax of the sampled distribution, the
greedy token the most likely, the top ones in order, pieces carrying their tokens'."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from corral.runtime.engine import Engine, Piece
from corral.runtime.logprobs import (
    Logprob,
    PendingLogprobs,
    TokenLogprob,
    log_softmax,
    logprob_of,
)
from corral.runtime.sampling import SamplerOptions
from llamacpp_ref import LlamaCpp
from tiny import write_tiny_llama


def test_log_softmax_is_the_sampled_distribution() -> None:
    logits = np.array([2.0, 1.0, -1.0, 0.5], dtype=np.float32)
    for temperature in (0.0, 1.0, 0.5):
        scale = temperature or 1.0
        expected = np.exp(logits / scale) / np.exp(logits / scale).sum()
        np.testing.assert_allclose(np.exp(log_softmax(logits, temperature)), expected, rtol=1e-6)


def test_the_top_ones_come_most_likely_first() -> None:
    logits = np.array([0.1, 3.0, -2.0, 2.5, 3.0], dtype=np.float32)
    lp = logprob_of(logits, 3, 3, 0.0, lambda t: f"<{t}>".encode())
    assert lp.chosen.token == "<3>" and lp.chosen.token_bytes == b"<3>"
    assert [t.token for t in lp.top] == ["<1>", "<4>", "<3>"]
    assert lp.top[0].logprob == lp.top[1].logprob > lp.chosen.logprob == lp.top[2].logprob
    assert math.fsum(math.exp(t.logprob) for t in lp.top) < 1.0


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    return Engine.load(write_tiny_llama(tmp_path_factory.mktemp("lp") / "t.gguf", endless=True))


def test_each_piece_carries_its_tokens_log_probabilities(engine: Engine) -> None:
    ids = engine.tokenizer.encode("the cat sat on")
    gen = engine.start_generation(
        engine.new_session(), ids, SamplerOptions.greedy(), num_predict=12, logprobs=2
    )
    events = engine.prefill(gen)
    while gen.next_token is not None:
        events += engine.step([gen])[0]
    pieces = [e for e in events if isinstance(e, Piece)]
    logprobs = [lp for p in pieces for lp in p.logprobs]
    generated = events[-1].generated
    assert len(logprobs) == len(generated)  # every token, none ended the answer
    text = b"".join(lp.chosen.token_bytes for lp in logprobs).decode("utf-8", errors="replace")
    assert text == "".join(p.text for p in pieces)
    for lp in logprobs:  # greedy: the chosen one is the most likely
        assert lp.chosen.logprob == lp.top[0].logprob and len(lp.top) == 2
        assert lp.chosen.logprob <= 0.0


@pytest.mark.slow
def test_smollm2_log_probabilities_match_llama_cpps(smollm2_path: Path) -> None:
    """Greedy tokens with their 3 likeliest alternatives, beside llama.cpp's server
    (`n_probs`, the same GGUF, 2 threads), up to the first near tie in llama.cpp's."""
    prompt = "The capital of France is"
    request = {"prompt": prompt, "n_predict": 8, "n_probs": 3, "post_sampling_probs": False}
    greedy_request = {"temperature": 0.0, "top_k": 1, "repeat_penalty": 1.0}
    theirs = LlamaCpp(smollm2_path).complete(request | greedy_request)["completion_probabilities"]
    engine = Engine.load(smollm2_path, num_ctx=512)
    greedy = SamplerOptions(temperature=0, repeat_penalty=1.0)
    gen = engine.start_generation(
        engine.new_session(), engine.tokenizer.encode(prompt), greedy, num_predict=8, logprobs=3
    )
    events = engine.prefill(gen)
    while gen.next_token is not None:
        events += engine.step([gen])[0]
    ours = [lp for e in events if isinstance(e, Piece) for lp in e.logprobs]
    compared = 0
    for mine, ref in zip(ours, theirs, strict=False):
        top = ref["top_logprobs"]
        if top[0]["logprob"] - top[1]["logprob"] < 0.5:
            break  # a near tie: quantized activations may order it either way
        assert mine.chosen.token == ref["token"]
        assert mine.chosen.logprob == pytest.approx(ref["logprob"], abs=0.2)
        assert {t.token for t in mine.top} == {t["token"] for t in top}
        compared += 1
    assert compared >= 4


def lp(text: bytes) -> Logprob:
    return Logprob(TokenLogprob(text.decode(errors="replace"), text, -1.0))


def test_pending_log_probabilities_go_with_the_text_that_completes_them() -> None:
    pending = PendingLogprobs()
    smile = "😀".encode()  # 4 bytes in two tokens
    tokens = [lp(b"Hi"), lp(smile[:2]), lp(smile[2:]), lp(b" there"), lp(b" you")]
    for t in tokens[:3]:
        pending.add(t)
    assert pending.shown("Hi") == (tokens[0],)
    assert pending.shown("😀") == (tokens[1], tokens[2])  # the character's two tokens
    pending.add(tokens[3])
    pending.add(tokens[4])
    # " there yo" shown, "u" held back for a stop string "u..." that then matched:
    assert pending.shown(" there yo", cut=True) == (tokens[3], tokens[4])
    assert pending.shown("", last=True) == ()


@pytest.mark.slow
def test_smollm2_pieces_carry_their_own_tokens_around_stops_and_control_tokens(
    smollm2_path: Path,
) -> None:
    engine = Engine.load(smollm2_path, num_ctx=512)
    prompt = engine.tokenizer.encode("<|im_start|>user\\nhi<|im_end|>\\n")  # raw: it writes
    for stop in ((), ("is",), ("\\n",)):  # <|im_start|> (a control token) itself, then text
        gen = engine.start_generation(
            engine.new_session(), prompt, SamplerOptions(temperature=0), num_predict=16,
            stop=stop, logprobs=1,
        )  # fmt: skip
        events = engine.prefill(gen)
        while gen.next_token is not None:
            events += engine.step([gen])[0]
        text, tokens = "", b""
        for piece in (e for e in events if isinstance(e, Piece)):
            text += piece.text
            tokens += b"".join(t.chosen.token_bytes for t in piece.logprobs)
            assert text.startswith(tokens.decode()) or events[-1].reason == "stop", stop
        assert b"<|im_start|>" not in tokens  # a control token: not in the text either
        if not stop:
            assert tokens.decode() == text  # every token's, in the order of the text
        else:  # ended by the stop string: the token it cut runs past the text
            assert tokens.decode().startswith(text) and stop[0] not in text
