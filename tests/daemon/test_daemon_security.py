"""API token over TCP, browser origins and DNS rebinding, against a real daemon on loopback."""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import ollama
import pytest

from serving import Daemon

TOKEN = "s3cret-token"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, int]]:
    """A daemon on loopback TCP that requires a token and allows one extra origin pattern."""
    port = free_port()
    with Daemon.start_in(
        tmp_path_factory.mktemp("home"),
        CORRAL_HOST=f"127.0.0.1:{port}",
        CORRAL_API_TOKEN=TOKEN,
        CORRAL_ORIGINS="https://*.example.com, http://tools.internal:8080",
    ) as daemon:
        yield daemon, port


def tcp(port: int, method: str, path: str, **headers: str) -> tuple[int, bytes, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.putrequest(method, path, skip_host="Host" in headers)
        for name, value in headers.items():
            conn.putheader(name.replace("_", "-"), value)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        conn.close()


def unix(daemon: Daemon, method: str, path: str, **headers: str) -> tuple[int, bytes, dict]:
    conn = daemon.connection()
    try:
        conn.request(method, path, headers={k.replace("_", "-"): v for k, v in headers.items()})
        response = conn.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        conn.close()


def error_of(body: bytes) -> str:
    (message,) = json.loads(body).values()
    return message


BEARER = {"Authorization": f"Bearer {TOKEN}"}


def test_tcp_requests_need_the_token(guarded: tuple[Daemon, int]) -> None:
    _, port = guarded
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        status, body, answer = tcp(port, "GET", "/api/version", **headers)
        assert status == 401
        assert error_of(body) == (
            "missing or wrong API token: send 'Authorization: Bearer <CORRAL_API_TOKEN>'"
        )
        assert answer["WWW-Authenticate"] == "Bearer"
    status, body, _ = tcp(port, "GET", "/api/version", **BEARER)
    assert status == 200 and json.loads(body)["version"]


def test_a_token_that_is_not_utf8_is_a_wrong_token(guarded: tuple[Daemon, int]) -> None:
    """It was a 500 (UnicodeEncodeError in the check) with a traceback in the log."""
    _, port = guarded
    status, body, _ = tcp(port, "GET", "/api/version", Authorization=b"Bearer \xff\xfe")  # type: ignore[arg-type]
    assert status == 401
    assert error_of(body).startswith("missing or wrong API token")


def test_the_unix_socket_needs_no_token(guarded: tuple[Daemon, int]) -> None:
    daemon, _ = guarded
    assert daemon.client.version()


def test_the_ollama_client_works_with_the_token(guarded: tuple[Daemon, int]) -> None:
    _, port = guarded
    assert ollama.Client(host=f"http://127.0.0.1:{port}", headers=BEARER).list().models == []
    with pytest.raises(ollama.ResponseError) as caught:
        ollama.Client(host=f"http://127.0.0.1:{port}").list()
    assert caught.value.status_code == 401


@pytest.mark.parametrize(
    "origin",
    ["http://evil.example", "https://example.com.evil.net", "http://localhost.evil.net", "null"],
)
def test_foreign_browser_origins_are_refused(guarded: tuple[Daemon, int], origin: str) -> None:
    daemon, port = guarded
    status, body, _ = tcp(port, "GET", "/api/tags", Origin=origin, **BEARER)
    assert status == 403
    assert (
        error_of(body) == f"origin '{origin}' is not allowed: add it to CORRAL_ORIGINS to allow it"
    )
    status, _, _ = unix(daemon, "GET", "/api/tags", Origin=origin)  # on every transport
    assert status == 403


@pytest.mark.parametrize(
    "origin",
    [
        "http://localhost:3000",
        "http://127.0.0.1",
        "https://app.example.com",
        "http://tools.internal:8080",
        "vscode-webview://abc123",
    ],
)
def test_local_and_listed_origins_get_cors_headers(
    guarded: tuple[Daemon, int], origin: str
) -> None:
    _, port = guarded
    status, body, headers = tcp(port, "GET", "/api/tags", Origin=origin, **BEARER)
    assert status == 200 and json.loads(body) == {"models": []}
    assert headers["Access-Control-Allow-Origin"] == origin
    assert "Origin" in headers["Vary"]


def test_a_preflight_from_an_allowed_origin_is_answered_without_the_token(
    guarded: tuple[Daemon, int],
) -> None:
    _, port = guarded
    status, _, headers = tcp(
        port,
        "OPTIONS",
        "/api/chat",
        Origin="http://localhost:5173",
        Access_Control_Request_Method="POST",
        Access_Control_Request_Headers="authorization,content-type",
    )
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == "http://localhost:5173"
    assert "POST" in headers["Access-Control-Allow-Methods"]
    assert headers["Access-Control-Allow-Headers"] == "authorization,content-type"
    status, _, _ = tcp(port, "OPTIONS", "/api/chat", Origin="http://evil.example")
    assert status == 403


@pytest.mark.parametrize("host", ["evil.example", "evil.example:11434", "rebind.attacker.net"])
def test_a_rebound_host_name_is_refused_on_a_loopback_bind(
    guarded: tuple[Daemon, int], host: str
) -> None:
    _, port = guarded
    status, body, _ = tcp(port, "GET", "/api/version", Host=host, **BEARER)
    assert status == 403
    assert error_of(body) == f"host '{host}' is not allowed: use localhost"


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]", "box.local", "192.168.1.5"])
def test_local_host_names_are_accepted(guarded: tuple[Daemon, int], host: str) -> None:
    _, port = guarded
    status, _, _ = tcp(port, "GET", "/api/version", Host=f"{host}:{port}", **BEARER)
    assert status == 200


def test_without_a_token_loopback_tcp_is_open_but_still_checks_host_and_origin(
    tmp_path: Path,
) -> None:
    port = free_port()
    with Daemon.start_in(tmp_path / "home", CORRAL_HOST=f"127.0.0.1:{port}"):
        assert tcp(port, "GET", "/api/version")[0] == 200
        assert tcp(port, "GET", "/api/version", Host="evil.example")[0] == 403
        assert tcp(port, "GET", "/api/version", Origin="http://evil.example")[0] == 403


def test_corral_client_sends_the_token_from_the_environment(
    guarded: tuple[Daemon, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    from corral.client.http import Client, ResponseError

    _, port = guarded
    monkeypatch.delenv("CORRAL_API_TOKEN", raising=False)
    with pytest.raises(ResponseError) as refused:
        Client(f"127.0.0.1:{port}").version()
    assert refused.value.status == 401
    monkeypatch.setenv("CORRAL_API_TOKEN", TOKEN)
    assert Client(f"127.0.0.1:{port}").version()
    assert Client(f"127.0.0.1:{port}", token=TOKEN).version()


def test_the_cli_with_a_wrong_token_says_so(guarded: tuple[Daemon, int]) -> None:
    from click.testing import CliRunner

    from corral.client.cli import main

    _, port = guarded
    env = {"CORRAL_HOST": f"127.0.0.1:{port}", "CORRAL_API_TOKEN": "wrong"}
    result = CliRunner().invoke(main, ["ls"], env=env)
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert "API token" in line and "not running" not in line


def test_openai_clients_get_refusals_in_openais_shape(guarded: tuple[Daemon, int]) -> None:
    import openai

    _, port = guarded
    with (
        openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key="wrong", max_retries=0
        ) as client,
        pytest.raises(openai.AuthenticationError) as refused,
    ):
        client.models.list()
    assert refused.value.status_code == 401
    assert "missing or wrong API token" in refused.value.message
    assert refused.value.body["message"].startswith("missing or wrong API token")


def test_a_connection_that_never_finishes_its_request_is_closed(tmp_path: Path) -> None:
    """Idle connections and unfinished headers are closed after CORRAL_IDLE_TIMEOUT:
    otherwise clients that open connections and send nothing could use up the daemon's
    files."""
    port = free_port()
    with Daemon.start_in(tmp_path, CORRAL_HOST=f"127.0.0.1:{port}", CORRAL_IDLE_TIMEOUT="1s"):
        half = socket.create_connection(("127.0.0.1", port), timeout=30)
        idle = socket.create_connection(("127.0.0.1", port), timeout=30)
        with half, idle:
            half.sendall(b"GET /api/tags HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no end of headers
            assert half.recv(100) == b"" and idle.recv(100) == b""  # closed by the daemon


def test_an_upload_that_would_fill_the_disk_is_refused(tmp_path: Path) -> None:
    """POST /api/blobs wrote any body until the disk was full (a 500 then, the user's other
    programs out of space meanwhile); it leaves CORRAL_MIN_FREE_DISK free, here more than
    any disk has, so every upload is a 507, with or without a declared length."""
    data = b"x" * 4096
    path = f"/api/blobs/sha256:{hashlib.sha256(data).hexdigest()}"
    with Daemon.start_in(tmp_path / "home", CORRAL_MIN_FREE_DISK="1000000TB") as daemon:
        for chunked in (False, True):
            conn = daemon.connection()
            try:
                body = iter([data]) if chunked else data
                conn.request("POST", path, body=body, encode_chunked=chunked)
                response = conn.getresponse()
                status, answer = response.status, response.read()
            finally:
                conn.close()
            assert status == 507
            assert error_of(answer).startswith("not enough disk space")
        assert not list((tmp_path / "home" / "blobs").iterdir())
