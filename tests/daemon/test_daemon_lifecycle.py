"""The daemon as a process: its socket, signals, a second daemon, disconnects, a busy loop."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.client.http import Client, DaemonNotRunning, StreamCut
from serving import Daemon, daemon_env
from tiny import write_tiny_llama

LONG_NAME = "long:latest"
# Unbounded generation: a context far beyond what the test lets it reach.
ENDLESS = {"num_ctx": 100_000, "num_predict": -1, "temperature": 0.8, "seed": 1}


@pytest.fixture(scope="module")
def long_model(daemon: Daemon, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny model with a huge context window, for generations that do not end alone."""
    path = write_tiny_llama(
        tmp_path_factory.mktemp("long") / "long.gguf", context_length=131072, endless=True
    )
    daemon.client.pull(str(path), stream=False)
    return LONG_NAME


@pytest.fixture
def own_daemon(tmp_path: Path) -> Iterator[Daemon]:
    with Daemon.start_in(tmp_path / "home") as d:
        yield d


def serve_once(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `corral serve` expecting it to refuse to start."""
    return subprocess.run(
        [sys.executable, "-m", "corral.client", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def start_stream(daemon: Daemon, model: str) -> tuple[socket.socket, bytes]:
    """Send a streaming generate on a raw socket; return it with the first NDJSON line."""
    body = json.dumps({"model": model, "prompt": "Tell me everything", "options": ENDLESS})
    request = (
        f"POST /api/generate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    )
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(60)
    sock.connect(str(daemon.socket_path))
    sock.sendall(request.encode())
    received = b""
    while b'"response"' not in received:
        chunk = sock.recv(4096)
        assert chunk, received
        received += chunk
    return sock, received


def test_socket_is_private(daemon: Daemon) -> None:
    assert stat.S_ISSOCK(daemon.socket_path.stat().st_mode)
    assert stat.S_IMODE(daemon.socket_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(daemon.socket_path.parent.stat().st_mode) == 0o700  # created by it


def test_a_stream_cut_by_a_dying_daemon_is_an_error_not_an_ending(
    own_daemon: Daemon, tmp_path: Path
) -> None:
    path = write_tiny_llama(tmp_path / "endless.gguf", context_length=131072, endless=True)
    own_daemon.client.pull(str(path), stream=False)
    stream = own_daemon.client.generate("endless", "Hello", options={"num_predict": 100_000})
    assert next(stream).done is False
    assert own_daemon.process is not None
    own_daemon.process.kill()  # SIGKILL: no last message, no error line
    with pytest.raises(StreamCut) as cut:
        for _ in stream:
            pass
    assert "closed before the answer was complete" in cut.value.message


def test_sigterm_stops_cleanly_and_removes_the_socket(own_daemon: Daemon) -> None:
    assert own_daemon.socket_path.exists()
    assert own_daemon.stop() == 0
    assert not own_daemon.socket_path.exists()
    assert "stopped" in own_daemon.log()


def test_a_second_daemon_on_the_same_socket_refuses(daemon: Daemon) -> None:
    result = serve_once(daemon.env)
    assert result.returncode == 1
    assert f"another corral daemon is already serving {daemon.socket_path}" in result.stderr
    assert "Traceback" not in result.stderr
    assert daemon.client.is_running()


def test_a_stale_socket_is_replaced(socket_dir: Path, tmp_path: Path) -> None:
    path = socket_dir / "corral.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))  # a socket file nobody listens on, as a crashed daemon leaves
    dead.close()
    with Daemon(tmp_path, path, daemon_env(tmp_path, path)) as daemon:
        daemon.start()
        assert daemon.client.version()
        assert "removing stale socket" in daemon.log()


def test_a_file_in_the_way_of_the_socket_is_left_alone(socket_dir: Path, tmp_path: Path) -> None:
    path = socket_dir / "corral.sock"
    path.write_text("precious")
    result = serve_once(daemon_env(tmp_path, path))
    assert result.returncode == 1
    assert "exists and is not a socket" in result.stderr
    assert path.read_text() == "precious"


def test_startup_collects_unused_blobs_crash_leftovers_and_day_old_partials(
    socket_dir: Path, tmp_path: Path
) -> None:
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    unused = blobs / ("sha256-" + "ab" * 32)  # an upload never created from, say
    unused.write_bytes(b"orphan")
    crashed = blobs / "tmp-0123abcd"  # a copy under way when the daemon was killed
    crashed.write_bytes(b"half a model")
    quantizing = blobs / f".tmp-quantize-{'c' * 32}.gguf.4242.part"  # the quantizer's own
    quantizing.write_bytes(b"half quantized")
    old_partial, fresh_partial = blobs / "partial-url-old", blobs / "partial-url-fresh"
    old_partial.write_bytes(b"half")
    fresh_partial.write_bytes(b"half")  # may still resume
    day_and_more = time.time() - 25 * 3600
    os.utime(old_partial, (day_and_more, day_and_more))
    path = socket_dir / "corral.sock"
    with Daemon(tmp_path, path, daemon_env(tmp_path, path)) as daemon:
        daemon.start()
        assert daemon.client.version()
    assert not unused.exists() and not old_partial.exists() and not crashed.exists()
    assert not quantizing.exists()
    assert fresh_partial.exists()


def test_a_socket_folder_others_may_write_to_is_refused(socket_dir: Path, tmp_path: Path) -> None:
    socket_dir.chmod(0o1777)  # like /tmp: another user could swap the socket for theirs
    path = socket_dir / "corral.sock"
    result = serve_once(daemon_env(tmp_path, path))
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()[-1:]
    assert f"the socket's folder {socket_dir} is not private to this user (mode 1777)" in line
    assert not path.exists()


def test_a_bad_setting_is_one_line_and_exit_2(socket_dir: Path, tmp_path: Path) -> None:
    env = daemon_env(tmp_path, socket_dir / "s.sock", CORRAL_KEEP_ALIVE="soon")
    result = serve_once(env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "Error: CORRAL_KEEP_ALIVE='soon' is not valid: invalid duration 'soon': use seconds "
        "or a form like '5m', '1h30m'"
    ]


def test_serve_help_lists_the_settings() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "corral.client", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    for name in ("CORRAL_HOME", "CORRAL_SOCKET", "CORRAL_KEEP_ALIVE"):
        assert name in result.stdout


def test_nothing_listening_is_daemon_not_running(socket_dir: Path) -> None:
    client = Client(str(socket_dir / "none.sock"))
    assert not client.is_running()
    with pytest.raises(DaemonNotRunning, match="corral is not running"):
        client.version()


def test_a_client_that_disconnects_cancels_its_stream(daemon: Daemon, long_model: str) -> None:
    ended = daemon.log().count("generation ended (cancel)")
    sock, _ = start_stream(daemon, long_model)
    sock.close()
    daemon.wait_for_log("generation ended (cancel)", ended + 1)
    # The slot is free again: a bounded request completes.
    answer = daemon.client.generate(long_model, "Hi", options={"num_predict": 3}, stream=False)
    assert answer.done and answer.eval_count == 3


def test_a_client_that_disconnects_cancels_a_non_streaming_request(
    daemon: Daemon, long_model: str
) -> None:
    ended = daemon.log().count("generation ended (cancel)")
    started = daemon.log().count("generating from")
    conn = daemon.connection()
    body = {"model": long_model, "prompt": "Go on", "stream": False, "options": ENDLESS}
    conn.request("POST", "/api/generate", json.dumps(body), {"Content-Type": "application/json"})
    daemon.wait_for_log("generating from", started + 1)
    conn.close()
    daemon.wait_for_log("generation ended (cancel)", ended + 1)


def test_the_event_loop_answers_while_a_model_generates(daemon: Daemon, long_model: str) -> None:
    ended = daemon.log().count("generation ended (cancel)")
    sock, _ = start_stream(daemon, long_model)
    try:
        for _ in range(3):
            assert daemon.client.version()
            assert daemon.client.list().models
    finally:
        sock.close()
    daemon.wait_for_log("generation ended (cancel)", ended + 1)


def test_sigterm_cuts_running_streams_short_and_exits(own_daemon: Daemon, tmp_path: Path) -> None:
    path = write_tiny_llama(tmp_path / "long.gguf", context_length=131072, endless=True)
    own_daemon.client.pull(str(path), stream=False)
    sock, received = start_stream(own_daemon, LONG_NAME)
    own_daemon.process.send_signal(15)
    with sock:
        while chunk := sock.recv(65536):
            received += chunk
    lines = [line for line in received.split(b"\n") if line.startswith(b"{")]
    assert json.loads(lines[-1]) == {
        "error": "corral is shutting down; the answer was cut short",
        "status": 503,
    }
    assert own_daemon.process.wait(30) == 0
    assert not own_daemon.socket_path.exists()


def test_the_socket_path_comes_from_corral_socket(daemon: Daemon) -> None:
    env = {**os.environ, "CORRAL_SOCKET": str(daemon.socket_path)}
    env.pop("CORRAL_HOST", None)
    result = subprocess.run(
        [sys.executable, "-c", "from corral.client.http import Client; print(Client().version())"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == daemon.client.version()


def test_corral_host_adds_a_loopback_tcp_listener(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with Daemon.start_in(tmp_path / "home", CORRAL_HOST=f"127.0.0.1:{port}") as daemon:
        over_tcp = Client(f"127.0.0.1:{port}")
        assert over_tcp.version() == daemon.client.version()
        assert over_tcp.list().models == ()


def test_a_non_loopback_host_is_refused_without_a_token(socket_dir: Path, tmp_path: Path) -> None:
    env = daemon_env(tmp_path, socket_dir / "s.sock", CORRAL_HOST="0.0.0.0:11434")
    result = serve_once(env)
    assert result.returncode == 2
    assert "set CORRAL_API_TOKEN" in result.stderr
