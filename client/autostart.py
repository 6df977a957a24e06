"""Start the daemon in the background when nothing answers on its Unix socket.

`corral run NAME` on a fresh machine just works: the client starts
`python -m corral.client serve` in its own session (it outlives the
command), logging to <home>/logs/serve.log, and waits until it answers.
The daemon records its own pid in <home>/serve.pid (`corral serve --stop`
uses it). A TCP endpoint (CORRAL_HOST) is someone else's daemon and is never
started from here, nor is any daemon with CORRAL_AUTOSTART=0 (a service manager
runs it: a daemon started by the CLI, with the CLI's environment, would take
the service's socket when it restarts).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from corral.client.api import ENV_SOCKET, default_home
from corral.client.http import Client, DaemonNotRunning

ENV_AUTOSTART = "CORRAL_AUTOSTART"  # "0": the client never starts the daemon
START_TIMEOUT = 15.0  # seconds
POLL_INTERVAL = 0.1
LOG_NAME = Path("logs") / "serve.log"
ROTATE_BYTES = 10 << 20  # a log bigger than this is moved aside when a daemon starts


class AutostartError(RuntimeError):
    """The background daemon did not come up; the message points at its log."""


def ensure_running(
    client: Client, environ: Mapping[str, str] = os.environ, timeout: float = START_TIMEOUT
) -> None:
    """Return once the daemon answers, starting it first if it is not running."""
    if client.is_running():
        return
    socket_path = client.endpoint.socket_path
    if socket_path is None or not autostart_allowed(environ):
        raise DaemonNotRunning(client.endpoint)
    home = default_home(environ)
    process = start_daemon(home, socket_path, environ)
    _wait_until_answering(client, process, home / LOG_NAME, timeout)


def autostart_allowed(environ: Mapping[str, str] = os.environ) -> bool:
    return environ.get(ENV_AUTOSTART, "1").strip().lower() not in ("0", "false", "no", "off")


def start_daemon(home: Path, socket_path: Path, environ: Mapping[str, str]) -> subprocess.Popen:
    """Launch `corral serve` detached, serving `socket_path`, logging under `home`."""
    log_path = home / LOG_NAME
    home.mkdir(mode=0o700, parents=True, exist_ok=True)  # private, as the daemon makes it
    log_path.parent.mkdir(parents=True, exist_ok=True)
    _rotate(log_path)
    env = {**environ, ENV_SOCKET: str(socket_path)}
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "corral.client", "serve"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # no SIGINT from the user's Ctrl+C, survives the CLI
            env=env,
        )
    return process  # the daemon writes <home>/serve.pid itself, once it owns the home


def _rotate(log_path: Path) -> None:
    """Keep the log of the daemon before last as serve.log.1 once the log is big: a
    daemon started in the background for months logs every request."""
    try:
        if log_path.stat().st_size > ROTATE_BYTES:
            log_path.replace(log_path.with_name(log_path.name + ".1"))
    except FileNotFoundError:
        pass


def _wait_until_answering(
    client: Client, process: subprocess.Popen, log_path: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.is_running():
            return
        status = process.poll()
        if status is not None:
            if client.is_running():  # another client's daemon won the race
                return
            raise AutostartError(
                f"corral serve exited with status {status}: {_last_line(log_path)} "
                f"(log: {log_path})"
            )
        time.sleep(POLL_INTERVAL)
    raise AutostartError(f"corral serve did not answer within {timeout:.0f}s (log: {log_path})")


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return lines[-1] if lines else "no output"
