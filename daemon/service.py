"""The daemon as a service: one daemon per home, its pid file, and `corral serve --stop`.

A daemon holds an exclusive lock on <home>/serve.lock for its whole life (the
kernel drops it when the process ends, however it ends), so a second daemon
on the same home refuses to start, and a stale pid file from a crashed daemon
is recognised as stale. <home>/serve.pid holds the running daemon's pid for
people and scripts (and systemd's PIDFile); the lock file itself is never
removed, so two daemons can never each lock a different file of that name.

`corral serve --stop` finds the daemon by the home's pid file (trusted only
while the home is locked) or, failing that, by asking the kernel who is
listening on the socket (SO_PEERCRED), sends it SIGTERM and waits until the
home is unlocked and the socket is silent.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path

LOCK_NAME = "serve.lock"
PID_NAME = "serve.pid"
STOP_TIMEOUT = 30.0  # seconds: the daemon itself gives streams 5s, then unloads
POLL_INTERVAL = 0.1


class ServeError(Exception):
    """The daemon cannot start or stop; the message says why and what to do."""


@contextlib.contextmanager
def claim_home(home: Path) -> Iterator[None]:
    """Hold the home's lock and pid file while the daemon runs. A home made here is
    private to its user (0700): manifests hold system prompts and saved chats."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(home / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = read_pid(home)
            who = f"another corral daemon (pid {pid})" if pid else "another corral daemon"
            raise ServeError(
                f"{who} is already using {home}; stop it with `corral serve --stop` "
                "or set CORRAL_HOME to another folder"
            ) from None
        _write_pid(home)
        try:
            yield
        finally:
            if read_pid(home) == os.getpid():
                (home / PID_NAME).unlink(missing_ok=True)
    finally:
        os.close(fd)  # releases the lock


def read_pid(home: Path) -> int | None:
    try:
        text = (home / PID_NAME).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _write_pid(home: Path) -> None:
    """Atomically: a reader never sees an empty or half-written pid file."""
    temporary = home / f".{PID_NAME}.{os.getpid()}"
    temporary.write_text(f"{os.getpid()}\n")
    temporary.replace(home / PID_NAME)


def home_locked(home: Path) -> bool:
    """Is a daemon holding this home right now?"""
    try:
        fd = os.open(home / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def answers(path: Path) -> bool:
    """Does something accept connections on the Unix socket `path`?"""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def peer_pid(path: Path) -> int | None:
    """The pid of the process listening on `path` (Linux; None elsewhere or if none)."""
    if not sys.platform.startswith("linux"):
        return None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(str(path))
            creds = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        except OSError:
            return None
    pid, _, _ = struct.unpack("3i", creds)
    return pid or None


def daemon_pid(home: Path, socket_path: Path) -> int | None:
    """The running daemon of this home or socket, or None if there is none."""
    if home_locked(home) and (pid := read_pid(home)):
        return pid
    return peer_pid(socket_path)


def stop_daemon(home: Path, socket_path: Path, timeout: float = STOP_TIMEOUT) -> str:
    """SIGTERM the daemon and wait until it is gone; returns what happened, in one line."""
    pid = daemon_pid(home, socket_path)
    if pid is None:
        return f"corral is not running (nothing holds {home} or answers on {socket_path})"
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return f"corral (pid {pid}) had already stopped"
    except PermissionError:
        raise ServeError(
            f"not allowed to stop corral (pid {pid}): it runs as another user"
        ) from None
    deadline = time.monotonic() + timeout
    while home_locked(home) or answers(socket_path):
        if time.monotonic() > deadline:
            raise ServeError(
                f"corral (pid {pid}) is still running after {timeout:.0f}s; "
                f"`kill -9 {pid}` ends it at once"
            )
        time.sleep(POLL_INTERVAL)
    return f"stopped corral (pid {pid})"
