"""`corral run NAME` on a terminal (a pseudo-terminal), and the background start of the daemon."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.client.http import Client
from serving import Daemon, Terminal, corral_cli, daemon_env
from tiny import write_tiny_llama


@pytest.fixture
def terminal(daemon: Daemon) -> Iterator[type[Terminal]]:
    started: list[Terminal] = []

    def start(*args: str) -> Terminal:
        t = Terminal(list(args), daemon.env)
        started.append(t)
        return t

    yield start  # type: ignore[misc]
    for t in started:
        if t.process.poll() is None:
            t.process.kill()
            t.process.wait()


def prompt_tokens(daemon: Daemon) -> list[int]:
    return [int(n) for n in re.findall(r"generating from (\d+) prompt tokens", daemon.log())]


def test_the_chat_keeps_the_conversation(terminal, daemon: Daemon, tiny: str) -> None:
    session = terminal("run", tiny)
    session.read_until(">>> ")
    session.type("/set parameter num_predict 8")  # a short answer: both turns fit num_ctx
    session.read_until(">>> ")
    before = len(prompt_tokens(daemon))
    session.type("Hello there")
    first = session.read_until(">>> ")
    assert first.strip()  # the answer (after the echoed input)
    session.type("And again")
    session.read_until(">>> ")
    first_turn, second_turn = prompt_tokens(daemon)[before:]
    assert second_turn > first_turn  # the second prompt carries the first exchange
    session.type("/bye")
    assert session.close() == 0


def test_slash_commands_and_ctrl_d(terminal, tiny: str) -> None:
    session = terminal("run", tiny)
    session.read_until(">>> ")
    session.type("/?")
    assert "/bye" in session.read_until(">>> ")
    session.type("/nonsense")
    assert "Unknown command '/nonsense'" in session.read_until(">>> ")
    session.type("/clear")
    assert "Cleared session context" in session.read_until(">>> ")
    os.write(session.master, b"\x04")  # Ctrl+D on an empty line
    assert session.close() == 0


def test_ctrl_c_stops_the_answer_but_not_the_chat(terminal, daemon: Daemon, tmp_path: Path) -> None:
    # A recipe whose defaults make answers run on: greedy, with a huge context window.
    path = write_tiny_llama(tmp_path / "chatty.gguf", context_length=131072, endless=True)
    recipes = daemon.home / "Modelfiles"
    recipes.mkdir(exist_ok=True)
    (recipes / "chatty.yaml").write_text(
        f"name: chatty\nsources: [{path}]\nparameters: {{temperature: 0, num_ctx: 100000}}\n"
    )
    daemon.client.pull("chatty", stream=False)
    started = daemon.log().count("generating from")
    cancelled = daemon.log().count("generation ended (cancel)")
    session = terminal("run", "chatty")
    session.read_until(">>> ")
    session.type("Tell me a very long story")
    daemon.wait_for_log("generating from", started + 1)
    session.process.send_signal(signal.SIGINT)
    session.read_until(">>> ")
    daemon.wait_for_log("generation ended (cancel)", cancelled + 1)
    session.type("/bye")
    assert session.close() == 0


def test_run_pulls_a_missing_model_first(daemon: Daemon, tiny_gguf: Path) -> None:
    recipes = daemon.home / "Modelfiles"
    recipes.mkdir(exist_ok=True)
    (recipes / "fresh.yaml").write_text(f"name: fresh:v1\nsources: [{tiny_gguf}]\n")
    result = subprocess.run(
        [sys.executable, "-m", "corral.client", "run", "fresh:v1", "Hello"],
        env=daemon.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[0] == "pulling manifest"
    assert result.stdout.strip()
    assert "fresh:v1" in {m.name for m in daemon.client.list().models}


def test_run_starts_the_daemon_when_none_answers(
    socket_dir: Path, tmp_path: Path, tiny_gguf: Path
) -> None:
    home = tmp_path / "home"
    socket_path = socket_dir / "corral.sock"
    env = daemon_env(home, socket_path)
    client = Client(str(socket_path))
    assert not client.is_running()
    old_log = home / "logs" / "serve.log"
    old_log.parent.mkdir(parents=True)
    old_log.write_bytes(b"an old daemon's line\n" * 600_000)  # 12.6 MB: moved aside
    try:
        listing = subprocess.run(
            [sys.executable, "-m", "corral.client", "list"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert listing.returncode == 0, listing.stderr
        assert listing.stdout.split() == ["NAME", "ID", "SIZE", "MODIFIED"]
        assert client.is_running()
        pid = int((home / "serve.pid").read_text())
        assert "listening on" in (home / "logs" / "serve.log").read_text()
        assert "an old daemon" not in (home / "logs" / "serve.log").read_text()
        assert (home / "logs" / "serve.log.1").stat().st_size == 12_600_000
        pulled = subprocess.run(
            [sys.executable, "-m", "corral.client", "pull", str(tiny_gguf)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert pulled.returncode == 0, pulled.stderr
        answer = subprocess.run(
            [sys.executable, "-m", "corral.client", "run", "tiny", "Hi"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert answer.returncode == 0, answer.stderr
        assert answer.stdout.strip()
        assert int((home / "serve.pid").read_text()) == pid  # the same daemon served them
    finally:
        if (home / "serve.pid").exists():
            os.kill(int((home / "serve.pid").read_text()), signal.SIGTERM)
        deadline = time.monotonic() + 30
        while socket_path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    assert not socket_path.exists()  # it shut down cleanly


def test_a_daemon_that_cannot_start_is_one_clear_error(socket_dir: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = daemon_env(home, socket_dir / "corral.sock", CORRAL_KEEP_ALIVE="soon")
    result = subprocess.run(
        [sys.executable, "-m", "corral.client", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: corral serve exited with status 2: Error: CORRAL_KEEP_ALIVE")
    assert str(home / "logs" / "serve.log") in line


def test_ps_and_stop_start_no_daemon_and_autostart_can_be_turned_off(
    socket_dir: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    socket_path = socket_dir / "corral.sock"
    env = daemon_env(home, socket_path)
    ps = corral_cli(env, "ps", "--json")
    assert ps.returncode == 0 and json.loads(ps.stdout) == {"models": []}
    stop = corral_cli(env, "stop", "tiny")
    assert stop.returncode == 0 and "corral is not running" in stop.stderr
    # a service manager runs the daemon: the CLI must not start one of its own
    listing = corral_cli({**env, "CORRAL_AUTOSTART": "0"}, "list")
    assert listing.returncode == 1
    (line,) = listing.stderr.strip().splitlines()
    assert line.startswith("Error: corral is not running at ") and "corral serve" in line
    assert not socket_path.exists() and not (home / "serve.pid").exists()
