"""The wire types: Ollama's field names, round trips, and the errors that become 400s."""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import UTC, datetime

import pytest

from corral.client.api import (
    ChatRequest,
    ChatResponse,
    GenerateRequest,
    GenerateResponse,
    ListResponse,
    Message,
    Options,
    PullRequest,
    ShowResponse,
    WireError,
    default_socket_path,
    format_time,
    parse_duration,
    parse_host,
    parse_time,
    wire,
)


def test_an_ollama_generate_request_decodes() -> None:
    body = {
        "model": "smollm2:135m",
        "prompt": "Why is the sky blue?",
        "system": "Be brief.",
        "stream": False,
        "raw": False,
        "keep_alive": "10m",
        "options": {"temperature": 0.2, "top_k": 20, "num_predict": 64, "stop": ["\n\n"]},
    }
    req = GenerateRequest.from_json(json.dumps(body))
    assert req.model == "smollm2:135m" and req.stream is False
    assert req.options == Options(temperature=0.2, top_k=20, num_predict=64, stop=("\n\n",))
    assert json.loads(req.to_json()) == body


def test_json_integers_are_accepted_as_floats_and_integral_floats_as_integers() -> None:
    opts = Options.from_dict({"temperature": 1, "top_k": 40.0, "seed": 7})
    assert (opts.temperature, opts.top_k, opts.seed) == (1.0, 40, 7)
    assert isinstance(opts.top_k, int)


def test_unknown_options_are_collected_not_sent() -> None:
    opts = Options.from_dict({"mirostat": 2, "num_gpu": 1, "top_p": 0.5})
    assert opts.ignored == ("mirostat", "num_gpu")
    assert opts.to_dict() == {"top_p": 0.5}


def test_request_options_override_model_defaults_field_by_field() -> None:
    merged = Options(temperature=0.1).merged_over(Options(temperature=0.9, top_k=5))
    assert (merged.temperature, merged.top_k, merged.top_p) == (0.1, 5, None)


@pytest.mark.parametrize(
    ("cls", "body", "message"),
    [
        (GenerateRequest, '{"model": 1}', "field 'model' must be a string, got a number"),
        (GenerateRequest, '{"stream": "no"}', "field 'stream' must be a boolean, got a string"),
        (GenerateRequest, '{"options": {"seed": true}}', "'options.seed' must be an integer"),
        (GenerateRequest, '{"options": {"top_k": 1.5}}', "'options.top_k' must be an integer"),
        (GenerateRequest, '{"options": {"stop": [1]}}', "'options.stop[0]' must be a string"),
        (GenerateRequest, '{"keep_alive": []}', "'keep_alive' must be a string or a number"),
        (GenerateRequest, '{"keep_alive": "soon"}', "invalid duration 'soon'"),
        (ChatRequest, '{"messages": [{}]}', "field 'messages[0].role' is required"),
        (ChatRequest, '{"messages": {"role": "user"}}', "field 'messages' must be an array"),
        (ChatRequest, "[]", "the request body must be a JSON object, got an array"),
        (ChatRequest, "{", "invalid JSON in request body"),
        (ChatRequest, b"\xff", "invalid JSON in request body"),
    ],
)
def test_wrong_types_raise_wire_error_naming_the_field(cls: type, body: str, message: str) -> None:
    with pytest.raises(WireError) as caught:
        cls.from_json(body)
    assert message in str(caught.value)


def test_null_means_absent_and_deprecated_name_is_accepted() -> None:
    assert GenerateRequest.from_json('{"model": "m", "options": null}').options is None
    assert PullRequest.from_json('{"name": "smollm2:135m"}').model == "smollm2:135m"


def test_responses_leave_out_unset_statistics() -> None:
    piece = GenerateResponse(model="m", created_at="t", response="Hi")
    assert json.loads(piece.to_json()) == {
        "model": "m",
        "created_at": "t",
        "response": "Hi",
        "done": False,
    }
    final = GenerateResponse(model="m", created_at="t", done=True, done_reason="stop", eval_count=3)
    assert json.loads(final.to_json())["eval_count"] == 3


def test_nested_responses_round_trip() -> None:
    chat = ChatResponse(model="m", created_at="t", message=Message(role="assistant", content="x"))
    assert ChatResponse.from_json(chat.to_json()) == chat
    listing = ListResponse.from_json(
        '{"models": [{"name": "a:latest", "model": "a:latest", "size": 5, "digest": "ab",'
        ' "modified_at": "2024-01-01T00:00:00Z",'
        ' "details": {"family": "llama", "families": ["llama"]}}]}'
    )
    assert listing.models[0].details.families == ("llama",)
    show = ShowResponse.from_json('{"model_info": {"llama.context_length": 8192}}')
    assert show.model_info == {"llama.context_length": 8192}


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("300ms", 0.3),
        ("1.5s", 1.5),
        ("0", 0.0),
        (0, 0.0),
        (120, 120.0),
        ("45", 45.0),
        (-1, math.inf),
        ("-1m", math.inf),
        ("-1", math.inf),
        ("1e12", math.inf),  # past Go's longest duration: forever, as /api/ps can show
        (float("inf"), math.inf),
    ],
)
def test_keep_alive_durations(value: str | int, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ("m", "5x", "1h30", "", "--1s", True, "nan", float("nan")))
def test_bad_durations_are_refused(value: str | bool) -> None:
    with pytest.raises(WireError):
        parse_duration(value)


def test_times_round_trip_including_go_nanoseconds() -> None:
    moment = datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)
    assert format_time(moment) == "2024-05-01T10:00:00.123456Z"
    assert parse_time("2024-05-01T10:00:00.123456789Z") == moment
    assert parse_time("2024-05-01T12:00:00.123456+02:00") == moment


def test_hosts_and_the_default_socket() -> None:
    assert parse_host("127.0.0.1:11434") == ("127.0.0.1", 11434)
    assert parse_host("http://localhost:8080/") == ("localhost", 8080)
    assert parse_host(":9000") == ("127.0.0.1", 9000)
    assert parse_host("localhost") == ("localhost", 11434)  # as OLLAMA_HOST
    with pytest.raises(ValueError, match="host:port"):
        parse_host("localhost:http")
    assert default_socket_path({"CORRAL_SOCKET": "/x/y.sock"}).as_posix() == "/x/y.sock"
    assert default_socket_path({}).name == "corral.sock"
    one, other = (default_socket_path({"CORRAL_HOME": h}) for h in ("/srv/a", "/srv/b"))
    assert one.parent == other.parent == default_socket_path({}).parent
    assert one.name.startswith("corral-") and one != other  # each home its own daemon
    assert (
        default_socket_path({"CORRAL_HOME": "/srv/a", "CORRAL_SOCKET": "/x.sock"}).name == "x.sock"
    )


def test_type_checkers_see_the_wire_types_as_dataclasses() -> None:
    """`wire` is declared a dataclass transform, so an editor completes `Options(...)`'s
    arguments and a type checker knows them (the fields are keyword-only and frozen)."""
    transform = getattr(wire, "__dataclass_transform__", None)
    assert transform is not None
    assert transform["kw_only_default"]  # frozen_default: Python 3.11 keeps it in "kwargs"
    with pytest.raises(dataclasses.FrozenInstanceError):
        Options(temperature=0.5).temperature = 1.0  # type: ignore[misc]
