"""The daemon as a service: pid file, home lock, `corral serve --stop`, a crash mid-generation."""

from __future__ import annotations

import json
import signal
import socket
import stat
from pathlib import Path

import pytest

from corral.daemon.service import claim_home
from serving import Daemon, corral_cli, daemon_env
from tiny import write_tiny_llama

LONG_NAME = "long:latest"
# Greedy without a repeat penalty, the tiny model never picks its end token: it runs on.
ENDLESS = {
    "num_ctx": 100_000,
    "num_predict": -1,
    "temperature": 0,
    "repeat_penalty": 1.0,
}


def store_files(home: Path) -> set[str]:
    """Every file under blobs/ and manifests/, temporaries and partial files included."""
    return {
        str(p.relative_to(home))
        for folder in ("blobs", "manifests")
        for p in (home / folder).rglob("*")
        if p.is_file()
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_endless_stream(daemon: Daemon) -> socket.socket:
    """A streaming generate that only ends when cancelled; returns once it has begun."""
    body = json.dumps({"model": LONG_NAME, "prompt": "Tell me everything", "options": ENDLESS})
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(60)
    sock.connect(str(daemon.socket_path))
    sock.sendall(
        f"POST /api/generate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}".encode()
    )
    received = b""
    while b'"response"' not in received:
        chunk = sock.recv(4096)
        assert chunk, received
        received += chunk
    return sock


def test_the_daemon_writes_its_pid_file_and_removes_it_on_exit(tmp_path: Path) -> None:
    with Daemon.start_in(tmp_path / "home") as daemon:
        assert daemon.process is not None
        pid_file = daemon.home / "serve.pid"
        assert pid_file.read_text() == f"{daemon.process.pid}\n"
        assert daemon.stop() == 0
        assert not pid_file.exists()


def test_serve_stop_stops_the_daemon_and_waits_until_it_is_gone(tmp_path: Path) -> None:
    with Daemon.start_in(tmp_path / "home") as daemon:
        assert daemon.process is not None
        result = corral_cli(daemon.env, "serve", "--stop")
        assert result.returncode == 0, result.stderr
        assert result.stderr.strip() == f"stopped corral (pid {daemon.process.pid})"
        assert not daemon.socket_path.exists()  # gone before --stop returned
        assert not (daemon.home / "serve.pid").exists()
        assert daemon.process.wait(30) == 0
        assert "stopped" in daemon.log()


def test_serve_stop_finds_the_daemon_by_its_socket_without_a_pid_file(tmp_path: Path) -> None:
    with Daemon.start_in(tmp_path / "home") as daemon:
        assert daemon.process is not None
        (daemon.home / "serve.pid").unlink()
        result = corral_cli(daemon.env, "serve", "--stop")
        assert result.returncode == 0, result.stderr
        assert result.stderr.strip() == f"stopped corral (pid {daemon.process.pid})"
        assert daemon.process.wait(30) == 0


def test_serve_stop_without_a_daemon_says_so(socket_dir: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "serve.pid").write_text("1\n")  # stale: nothing holds the home's lock
    result = corral_cli(daemon_env(home, socket_dir / "corral.sock"), "serve", "--stop")
    assert result.returncode == 0
    assert result.stderr.startswith("corral is not running")


def test_a_second_daemon_on_the_same_home_refuses(socket_dir: Path, tmp_path: Path) -> None:
    with Daemon.start_in(tmp_path / "home") as daemon:
        assert daemon.process is not None
        other_socket = socket_dir / "other.sock"
        result = corral_cli(daemon_env(daemon.home, other_socket), "serve")
        assert result.returncode == 1
        assert result.stderr.strip().splitlines()[-1] == (
            f"Error: another corral daemon (pid {daemon.process.pid}) is already using "
            f"{daemon.home}; stop it with `corral serve --stop` or set CORRAL_HOME to another "
            "folder"
        )
        assert "Traceback" not in result.stderr
        assert not other_socket.exists()
        assert daemon.client.is_running()


def test_unknown_serve_arguments_are_one_line(tmp_path: Path, socket_dir: Path) -> None:
    result = corral_cli(daemon_env(tmp_path, socket_dir / "s.sock"), "serve", "--bogus")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "Error: unknown argument '--bogus'; `corral serve --help` lists them"
    ]


def test_a_tcp_port_in_use_is_a_clear_error(tmp_path: Path, socket_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = daemon_env(tmp_path, socket_dir / "s.sock", CORRAL_HOST=f"127.0.0.1:{port}")
        result = corral_cli(env, "serve")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"Error: cannot listen on 127.0.0.1:{port}")
    assert "Traceback" not in result.stderr
    assert not (socket_dir / "s.sock").exists()  # nothing left behind


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("CORRAL_MAX_MEMORY", "lots", "CORRAL_MAX_MEMORY='lots' is not valid: use a size like"),
        ("CORRAL_MAX_QUEUE", "-1", "CORRAL_MAX_QUEUE='-1' is not valid: must be 1 or more"),
        ("CORRAL_MAX_QUEUE", "0", "CORRAL_MAX_QUEUE='0' is not valid: must be 1 or more"),
        ("CORRAL_NUM_PARALLEL", "0", "CORRAL_NUM_PARALLEL='0' is not valid: must be 1 or more"),
        ("CORRAL_ORIGINS", "example.com", "is not an origin like https://app.example.com"),
        ("CORRAL_IDLE_TIMEOUT", "0", "CORRAL_IDLE_TIMEOUT='0' is not valid: use a positive"),
        ("CORRAL_KEEP_ALIVE", "nan", "CORRAL_KEEP_ALIVE='nan' is not valid"),
    ],
)
def test_bad_settings_are_one_line_and_exit_2(
    tmp_path: Path, socket_dir: Path, variable: str, value: str, words: str
) -> None:
    result = corral_cli(daemon_env(tmp_path, socket_dir / "s.sock", **{variable: value}), "serve")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: ") and words in line


def test_killing_the_daemon_mid_generation_leaves_a_store_the_next_daemon_serves(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    model = write_tiny_llama(tmp_path / "long.gguf", context_length=131072, endless=True)
    daemon = Daemon.start_in(home)
    try:
        daemon.client.pull(str(model), stream=False)
        before = store_files(home)
        stream = start_endless_stream(daemon)
        assert daemon.process is not None
        daemon.process.send_signal(signal.SIGKILL)
        assert daemon.process.wait(30) == -signal.SIGKILL
        stream.close()
        assert daemon.socket_path.exists()  # a crash leaves its socket and pid file behind
        assert corral_cli(daemon.env, "serve", "--stop").stderr.startswith("corral is not running")
        assert store_files(home) == before  # generation never writes to the store

        daemon.start()  # the same home and socket
        assert "removing stale socket" in daemon.log()
        assert (home / "serve.pid").read_text() == f"{daemon.process.pid}\n"
        assert LONG_NAME in {m.name for m in daemon.client.list().models}
        answer = daemon.client.generate(LONG_NAME, "Hi", options={"num_predict": 3}, stream=False)
        assert answer.done and answer.eval_count == 3
        assert store_files(home) == before
    finally:
        daemon.close()


def test_a_home_the_daemon_makes_is_private(tmp_path: Path, socket_dir: Path) -> None:
    """Manifests hold system prompts and chats kept with /save: a home corral creates,
    whether the client's autostart or `corral serve` makes it, is its user's alone."""
    env = daemon_env(tmp_path / "fresh", socket_dir / "corral.sock")
    assert corral_cli(env, "list").returncode == 0  # starts a daemon in a new home
    try:
        assert stat.S_IMODE((tmp_path / "fresh").stat().st_mode) == 0o700
    finally:
        assert corral_cli(env, "serve", "--stop").returncode == 0
    with claim_home(tmp_path / "served"):
        assert stat.S_IMODE((tmp_path / "served").stat().st_mode) == 0o700
