"""/api/embed, /api/embeddings, /api/ps, /api/copy, /api/blobs and generate's `context`,
through corral's own Client on the Unix socket, and the bad input each can get."""

from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest

from corral.client.api import parse_time
from corral.client.http import ResponseError
from corral.runtime.chat_template import PLAIN_TEMPLATE
from serving import Daemon
from tiny import write_tiny_llama

GREEDY = {"temperature": 0, "num_predict": 5}


def error_of(body: bytes) -> str:
    payload = json.loads(body)
    assert set(payload) == {"error"} and "\n" not in payload["error"]
    return payload["error"]


def leftovers(home: Path) -> list[str]:
    """Temporary files in the blob store (an upload that failed must leave none)."""
    return [p.name for p in (home / "blobs").iterdir() if p.name.startswith("tmp-")]


def test_embed_and_embeddings(daemon: Daemon, tiny: str) -> None:
    batch = daemon.client.embed(tiny, ["alpha", "beta"])
    assert len(batch.embeddings) == 2 and batch.model == tiny
    for vector in batch.embeddings:
        assert len(vector) == 64 and math.hypot(*vector) == pytest.approx(1, abs=1e-5)
    assert batch.prompt_eval_count and batch.load_duration is not None
    raw = daemon.client.embeddings(tiny, "alpha").embedding
    length = math.hypot(*raw)
    assert [x / length for x in raw] == pytest.approx(batch.embeddings[0], abs=1e-5)


def test_empty_embed_input_loads_the_model(daemon: Daemon, tiny: str) -> None:
    daemon.client.generate(tiny, "", keep_alive=0, stream=False)  # start unloaded
    assert daemon.client.embed(tiny, []).embeddings == ()
    assert tiny in {m.name for m in daemon.client.ps().models}
    assert daemon.client.embeddings(tiny, "").embedding == ()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"input": ["ok", 5]}, "field 'input[1]' must be a string, got a number"),
        ({"input": {"a": 1}}, "field 'input' must be a string or an array of strings"),
        ({"input": ["ok", ""]}, "input 1 is empty: there is nothing to embed"),
        ({"input": "x", "dimensions": 0}, "'dimensions' must be 1 or more, got 0"),
        ({"input": "x", "keep_alive": "soon"}, "invalid duration 'soon'"),
        ({"input": ["a"] * 2049}, "'input' has 2049 texts, more than the 2048 one request"),
    ],
)
def test_bad_embed_requests_are_400(daemon: Daemon, tiny: str, body: dict, message: str) -> None:
    status, answer, _ = daemon.raw("POST", "/api/embed", json.dumps({"model": tiny, **body}))
    assert status == 400
    assert error_of(answer).startswith(message)


def test_embed_of_an_unknown_model_is_404(daemon: Daemon) -> None:
    for path in ("/api/embed", "/api/embeddings"):
        status, body, _ = daemon.raw("POST", path, json.dumps({"model": "nope", "input": "x"}))
        assert status == 404 and "not found" in error_of(body)


def test_generate_context_round_trip(daemon: Daemon, tiny: str) -> None:
    first = daemon.client.generate(tiny, "One", options=GREEDY, stream=False)
    assert first.context and all(isinstance(t, int) for t in first.context)
    second = daemon.client.generate(
        tiny, "Two", context=first.context, options=GREEDY, stream=False
    )
    assert second.context[: len(first.context)] == first.context
    # the conversation so far was in the KV cache: only the new turn was evaluated
    assert second.prompt_eval_count < len(second.context) - len(first.context)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"context": [1, 99999]}, "'context' holds token 99999, not in this model's vocabulary"),
        ({"context": [-1]}, "'context' holds token -1"),
        ({"context": [1], "raw": True}, "raw mode does not support 'context'"),
        ({"system": "Be brief.", "raw": True}, "raw mode does not support 'system'"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs must be between 0 and 20"),
        ({"logprobs": "yes"}, "field 'logprobs' must be"),
        ({"context": ["a"]}, "field 'context[0]' must be an integer"),
        ({"suffix": "tail"}, "tiny:latest does not support insert: its vocabulary has no fill"),
        ({"suffix": "tail", "raw": True}, "raw mode does not support 'suffix'"),
        ({"suffix": "tail", "context": [1]}, "'suffix' does not support 'context'"),
    ],
)
def test_bad_generate_context_is_400(daemon: Daemon, tiny: str, extra: dict, message: str) -> None:
    body = {"model": tiny, "prompt": "Hi", "stream": False, **extra}
    status, answer, _ = daemon.raw("POST", "/api/generate", json.dumps(body))
    assert status == 400
    assert error_of(answer).startswith(message)


def test_a_huge_keep_alive_is_forever_and_ps_still_answers(daemon: Daemon, tiny: str) -> None:
    daemon.client.generate(tiny, "", keep_alive="1e12", stream=False)
    (entry,) = [m for m in daemon.client.ps().models if m.name == tiny]
    assert entry.expires_at.startswith("23")  # Go's longest duration from now, as Ollama
    daemon.client.generate(tiny, "", keep_alive=0, stream=False)


def test_ps_lists_loaded_models_only(daemon: Daemon, tiny: str) -> None:
    daemon.client.generate(tiny, "", keep_alive=0, stream=False)
    assert tiny not in {m.name for m in daemon.client.ps().models}
    daemon.client.generate(tiny, "", keep_alive="1h", stream=False)
    (entry,) = [m for m in daemon.client.ps().models if m.name == tiny]
    assert entry.size_vram == 0 and entry.size > 0 and entry.context_length == 256
    assert entry.details.format == "gguf" and entry.expires_at


def test_a_num_ctx_beyond_the_models_shares_one_loaded_copy(daemon: Daemon, tiny: str) -> None:
    daemon.client.generate(tiny, "", keep_alive=0, stream=False)
    for num_ctx in (256, 1000, 20000):  # the tiny model was trained for 256
        daemon.client.generate(
            tiny, "", keep_alive="1h", options={"num_ctx": num_ctx}, stream=False
        )
    (entry,) = [m for m in daemon.client.ps().models if m.name == tiny]
    assert entry.context_length == 256


def test_a_chat_longer_than_the_context_drops_its_oldest_messages(
    daemon: Daemon, tiny: str
) -> None:
    turn = "tell me more about the weather in the mountains " * 3
    history = [{"role": "system", "content": "be brief"}]
    for i in range(12):  # far more than the tiny model's 256 tokens
        history += [
            {"role": "user", "content": f"{i} {turn}"},
            {"role": "assistant", "content": turn},
        ]
    history.append({"role": "user", "content": "and now?"})
    options = {"num_predict": 2, "temperature": 0}
    whole = daemon.client.chat(tiny, history, options=options, stream=False)
    assert whole.done and 0 < whole.prompt_eval_count < 256
    status, body, _ = daemon.raw(
        "POST",
        "/api/chat",
        json.dumps({"model": tiny, "messages": [{"role": "user", "content": turn * 20}]}),
    )
    assert status == 400 and "context window" in json.loads(body)["error"]  # alone too long
    strict = {"model": tiny, "messages": history, "truncate": False, "options": options}
    status, body, _ = daemon.raw("POST", "/api/chat", json.dumps(strict))
    error = json.loads(body)["error"]
    assert status == 400 and "does not fit the context window of 256" in error  # as asked
    assert "leave 'truncate' unset" in error


def test_copy_and_its_errors(daemon: Daemon, tiny: str) -> None:
    daemon.client.copy(tiny, "copied:v2")
    assert {"copied:v2", tiny} <= {m.name for m in daemon.client.list().models}
    daemon.client.delete("copied:v2")
    with pytest.raises(ResponseError) as missing:
        daemon.client.copy("absent", "whatever")
    assert missing.value.status == 404
    with pytest.raises(ResponseError) as invalid:
        daemon.client.copy(tiny, "../escape")
    assert invalid.value.status == 400 and invalid.value.message.startswith("invalid model name")
    status, body, _ = daemon.raw("POST", "/api/copy", json.dumps({"source": 5}))
    assert status == 400 and error_of(body) == "field 'source' must be a string, got a number"


def test_push_blob_uploads_once(daemon: Daemon, tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(range(256)) * 5000)
    digest = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert not daemon.client.blob_exists(digest)
    uploads = daemon.log().count("POST /api/blobs/")
    assert daemon.client.push_blob(path) == digest
    assert daemon.client.blob_exists(digest)
    assert (daemon.home / "blobs" / digest.replace(":", "-")).read_bytes() == path.read_bytes()
    assert daemon.client.push_blob(path) == digest
    daemon.wait_for_log("POST /api/blobs/")
    assert daemon.log().count("POST /api/blobs/") == uploads + 1  # the second one: HEAD only


def test_an_upload_that_does_not_match_its_digest_is_refused(daemon: Daemon) -> None:
    claimed = "sha256:" + hashlib.sha256(b"what was promised").hexdigest()
    status, body, _ = daemon.raw("POST", f"/api/blobs/{claimed}", b"something else")
    assert status == 400 and "sha256 mismatch" in error_of(body)
    assert not daemon.client.blob_exists(claimed)
    assert leftovers(daemon.home) == []


@pytest.mark.parametrize("digest", ["sha256:abc", "md5:" + "0" * 64, "sha256:" + "G" * 64])
def test_invalid_blob_digests_are_400(daemon: Daemon, digest: str) -> None:
    for method in ("POST", "HEAD"):
        status, body, _ = daemon.raw(method, f"/api/blobs/{digest}", b"x")
        assert status == 400
        if method == "POST":
            assert error_of(body).startswith(f"invalid digest '{digest}'")


def test_show_of_a_model_without_a_template_shows_the_one_corral_uses(
    daemon: Daemon, tmp_path: Path
) -> None:
    path = write_tiny_llama(tmp_path / "bare.gguf", seed=3, chat_template=None)
    assert daemon.client.pull(str(path), stream=False).status == "success"
    shown = daemon.client.show("bare")
    assert shown.template == PLAIN_TEMPLATE


def test_a_model_stopped_while_answering_shows_as_stopping_until_it_is_done(
    daemon: Daemon, tmp_path: Path
) -> None:
    endless = write_tiny_llama(tmp_path / "endless.gguf", endless=True, seed=5)
    daemon.client.pull(str(endless), stream=False)
    answer = daemon.client.generate("endless", "Hi", options={"num_predict": 100_000})
    try:
        assert next(answer).response is not None  # answering
        daemon.client.generate("endless", "", keep_alive=0, stream=False)  # `corral stop`
        (entry,) = [m for m in daemon.client.ps().models if m.name == "endless:latest"]
        assert parse_time(entry.expires_at) <= datetime.now(UTC)  # `ps`: "Stopping..."
    finally:
        answer.close()
    daemon.wait_for_log("unloaded endless:latest")
    assert "endless:latest" not in {m.name for m in daemon.client.ps().models}


def test_logprobs_come_with_each_piece_and_join_in_one_answer(
    daemon: Daemon, tmp_path: Path
) -> None:
    endless = write_tiny_llama(tmp_path / "talker.gguf", endless=True, seed=6)
    daemon.client.pull(str(endless), stream=False)
    body = {
        "model": "talker",
        "prompt": "Hi",
        "logprobs": True,
        "top_logprobs": 2,
        "options": {"temperature": 0, "num_predict": 8, "repeat_penalty": 1.0},
    }
    status, lines = daemon.post_json("/api/generate", body)
    assert status == 200
    pieces = [line for line in lines if not line["done"]]
    logprobs = [lp for line in pieces for lp in line["logprobs"]]
    assert len(logprobs) == lines[-1]["eval_count"] == 8
    text = bytes(b for lp in logprobs for b in lp["bytes"]).decode(errors="replace")
    assert text == "".join(line["response"] for line in pieces)
    for lp in logprobs:  # greedy: each chosen token is the most likely one
        assert [t["logprob"] for t in lp["top_logprobs"]] == sorted(
            (t["logprob"] for t in lp["top_logprobs"]), reverse=True
        )
        assert lp["logprob"] == lp["top_logprobs"][0]["logprob"] <= 0
    status, whole = daemon.post_json("/api/generate", body | {"stream": False})
    assert status == 200 and [lp["token"] for lp in whole["logprobs"]] == [
        lp["token"] for lp in logprobs
    ]  # the same answer, its prompt from the KV cache now: logprobs alike to rounding
    assert [lp["logprob"] for lp in whole["logprobs"]] == pytest.approx(
        [lp["logprob"] for lp in logprobs], abs=1e-4
    )
    chat = {"messages": [{"role": "user", "content": "Hi"}], "stream": False}
    status, answer = daemon.post_json(
        "/api/chat", {k: body[k] for k in body if k != "prompt"} | chat
    )
    assert status == 200 and len(answer["logprobs"]) == 8
    status, plain = daemon.post_json("/api/generate", body | {"logprobs": False, "stream": False})
    assert status == 200 and "logprobs" not in plain
