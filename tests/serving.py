"""A real `corral serve` process on a temporary socket and home, for tests.

    with Daemon.start_in(tmp_path) as daemon:
        daemon.client.version()
        status, body = daemon.raw("POST", "/api/show", b"{bad json")

The socket lives in a short /tmp folder (Unix socket paths are limited to
about 104 bytes, and pytest's tmp_path can be longer). The daemon's stderr
goes to <home>/serve.log, which tests may read.
"""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral.client.http import Client, UnixHTTPConnection

START_TIMEOUT = 30.0
READ_TIMEOUT = 120.0
STOP_TIMEOUT = 15.0


def short_socket_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="corral-t", dir="/tmp"))


def corral_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`corral ARGS...` in a fresh process with `env`: its exit status and output."""
    return subprocess.run(
        [sys.executable, "-m", "corral.client", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def daemon_env(home: Path, socket_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a daemon or CLI process using this home and socket."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    env.update(CORRAL_HOME=str(home), CORRAL_SOCKET=str(socket_path), **extra)
    if cache := os.environ.get("CORRAL_TEST_CACHE"):
        env["CORRAL_TEST_CACHE"] = cache
    return env


@dataclass
class Daemon:
    home: Path
    socket_path: Path
    env: dict[str, str]
    process: subprocess.Popen | None = None
    _socket_dir: Path | None = field(default=None, repr=False)

    @classmethod
    def start_in(cls, home: Path, **extra_env: str) -> Daemon:
        socket_dir = short_socket_dir()
        socket_path = socket_dir / "run" / "corral.sock"  # "run" is created by the daemon
        daemon = cls(home, socket_path, daemon_env(home, socket_path, **extra_env))
        daemon._socket_dir = socket_dir
        daemon.start()
        return daemon

    @property
    def client(self) -> Client:
        return Client(str(self.socket_path))

    @property
    def log_path(self) -> Path:
        return self.home / "serve.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "corral.client", "serve"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not self.client.is_running():
            if self.process.poll() is not None:
                raise RuntimeError(f"corral serve exited: {self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"corral serve did not answer: {self.log()}")
            time.sleep(0.05)

    def stop(self) -> int:
        """SIGTERM and wait; returns the exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.stop()
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_for_log(self, text: str, count: int = 1, timeout: float = 60.0) -> str:
        """Poll the log until `text` appears `count` times (a generous bound, not a timing test)."""
        deadline = time.monotonic() + timeout
        while (log := self.log()).count(text) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not {count} times in the daemon log:\n{log}")
            time.sleep(0.05)
        return log

    # ----- raw HTTP, for what the Client would never send ---------------------

    def connection(self, timeout: float | None = 60.0) -> UnixHTTPConnection:
        return UnixHTTPConnection(self.socket_path, timeout=timeout)

    def raw(
        self, method: str, path: str, body: bytes | str | None = None
    ) -> tuple[int, bytes, dict[str, str]]:
        conn = self.connection()
        try:
            data = body.encode() if isinstance(body, str) else body
            conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            return response.status, response.read(), dict(response.getheaders())
        finally:
            conn.close()

    def post_json(self, path: str, payload: Any) -> tuple[int, Any]:
        """POST a JSON value; returns (status, decoded body or list of NDJSON lines)."""
        status, body, headers = self.raw("POST", path, json.dumps(payload))
        if headers.get("Content-Type", "").startswith("application/x-ndjson"):
            return status, [json.loads(line) for line in body.splitlines() if line.strip()]
        return status, json.loads(body) if body else None


class Terminal:
    """A `corral` process whose stdin/stdout/stderr are a pseudo-terminal."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        master, slave = pty.openpty()
        self.master = master
        self.process = subprocess.Popen(
            [sys.executable, "-m", "corral.client", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env={**env, "TERM": "dumb"},
        )
        os.close(slave)
        self.seen = ""

    def read_until(self, text: str, timeout: float = READ_TIMEOUT) -> str:
        """Read output until `text` appears after what was already consumed."""
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0, f"{text!r} never came; got {self.seen!r}"
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:  # the process closed the terminal
                    chunk = b""
                assert chunk, f"the process ended before {text!r}; got {self.seen!r}"
                self.seen += chunk.decode(errors="replace")
        before, _, self.seen = self.seen.partition(text)
        return before

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\n")

    def close(self) -> int:
        try:
            return self.process.wait(30)
        finally:
            os.close(self.master)
