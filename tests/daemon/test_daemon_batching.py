"""Batched decoding through a real daemon: concurrent requests to one model share each
decode step, and each still gets the answer it would get alone."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.client import HTTPResponse

import pytest

from corral.client.http import UnixHTTPConnection
from serving import Daemon
from tiny import write_tiny_llama

LONG_NAME = "long:latest"
# (prompt, sampling): greedy rows and seeded-sampling rows in one batch
REQUESTS = (
    ("Tell me everything", {"temperature": 0}),
    ("Once upon a time", {"temperature": 0.9, "seed": 7}),
    ("The cat sat on the", {"temperature": 0}),
    ("Why is the sky blue", {"temperature": 0.7, "seed": 42, "top_k": 20}),
)
COMMON = {"num_ctx": 4096, "repeat_penalty": 1.0}
SOLO_TOKENS = 48


@pytest.fixture(scope="module")
def batching(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """Four slots per model; a model that never ends a generation by itself."""
    folder = tmp_path_factory.mktemp("batching")
    model = write_tiny_llama(folder / "long.gguf", context_length=131072, endless=True)
    with Daemon.start_in(folder / "home", CORRAL_NUM_PARALLEL="4") as d:
        d.client.pull(str(model), stream=False)
        yield d


def solo_answer(daemon: Daemon, prompt: str, sampling: dict) -> str:
    options = {**COMMON, **sampling, "num_predict": SOLO_TOKENS}
    body = {"model": LONG_NAME, "prompt": prompt, "stream": False, "options": options}
    status, answer = daemon.post_json("/api/generate", body)
    assert status == 200 and answer["eval_count"] == SOLO_TOKENS, answer
    # a character cut in half by the last token is flushed as U+FFFD; a stream that goes
    # on completes it instead
    return answer["response"].rstrip("\ufffd")


def open_stream(daemon: Daemon, prompt: str, sampling: dict) -> UnixHTTPConnection:
    """Send an endless streaming request; its answer is read later."""
    options = {**COMMON, **sampling, "num_predict": -1}
    conn = daemon.connection()
    body = json.dumps({"model": LONG_NAME, "prompt": prompt, "options": options})
    conn.request("POST", "/api/generate", body, {"Content-Type": "application/json"})
    return conn


def read_text(response: HTTPResponse, at_least: int, text: str = "") -> str:
    """Read NDJSON lines until the answer's text is `at_least` characters long."""
    while len(text) < at_least:
        line = response.readline()
        assert line, f"the stream ended early after {text!r}"
        event = json.loads(line)
        assert "error" not in event and not event["done"], event
        text += event["response"]
    return text


def test_concurrent_streams_decode_together_with_their_own_answers(batching: Daemon) -> None:
    alone = [solo_answer(batching, prompt, sampling) for prompt, sampling in REQUESTS]
    fours = batching.log().count("decoding a batch of 4")
    cancelled = batching.log().count("generation ended (cancel)")
    conns = [open_stream(batching, prompt, sampling) for prompt, sampling in REQUESTS]
    try:
        responses = [conn.getresponse() for conn in conns]
        assert all(r.status == 200 for r in responses)
        # All four stream until cancelled, so all four end up in one batch.
        batching.wait_for_log("decoding a batch of 4", fours + 1)
        texts = [read_text(r, len(ref) // 2) for r, ref in zip(responses, alone, strict=True)]

        conns[0].close()  # one client leaves: it is dropped, the other three go on
        batching.wait_for_log("generation ended (cancel)", cancelled + 1)
        log = batching.wait_for_log("decoding a batch of 3")
        assert log.rindex("decoding a batch of 3") > log.rindex("decoding a batch of 4")
        for i in (1, 2, 3):
            texts[i] = read_text(responses[i], len(alone[i]), texts[i])
        for text, ref in zip(texts, alone, strict=True):
            n = min(len(text), len(ref))
            assert text[:n] == ref[:n]
    finally:
        for conn in conns:
            conn.close()
    batching.wait_for_log("generation ended (cancel)", cancelled + 4)


def test_a_freed_slot_goes_to_the_next_request_while_the_batch_runs(batching: Daemon) -> None:
    queued = batching.log().count("request queued")
    cancelled = batching.log().count("generation ended (cancel)")
    conns = [open_stream(batching, prompt, sampling) for prompt, sampling in REQUESTS]
    try:
        for conn in conns:
            read_text(conn.getresponse(), 1)  # all four slots are busy
        fifth = open_stream(batching, "A fifth request", {"temperature": 0})
        batching.wait_for_log("request queued", queued + 1)  # no slot for it yet
        conns[0].close()
        response = fifth.getresponse()  # it gets the freed slot and streams
        assert read_text(response, 8)
        conns.append(fifth)
    finally:
        for conn in conns:
            conn.close()
    batching.wait_for_log("generation ended (cancel)", cancelled + 5)


def test_a_request_refused_at_admission_leaves_the_batch_running(batching: Daemon) -> None:
    cancelled = batching.log().count("generation ended (cancel)")
    conns = [open_stream(batching, prompt, sampling) for prompt, sampling in REQUESTS[:2]]
    try:
        responses = [conn.getresponse() for conn in conns]
        texts = [read_text(r, 4) for r in responses]
        long_prompt = {**COMMON, "num_ctx": 4096}
        body = {"model": LONG_NAME, "prompt": "word " * 5000, "options": long_prompt}
        status, answer = batching.post_json("/api/generate", body)
        assert status == 400 and "context window of 4096" in answer["error"]
        for i, response in enumerate(responses):  # both streams go on
            texts[i] = read_text(response, len(texts[i]) + 16, texts[i])
    finally:
        for conn in conns:
            conn.close()
    batching.wait_for_log("generation ended (cancel)", cancelled + 2)
