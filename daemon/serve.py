"""`corral serve`: run the daemon in the foreground until SIGTERM or SIGINT.

The Unix socket lives in a folder created 0700 and is itself 0600, so only
the user can talk to the daemon. A lock file beside the socket makes a
second daemon on the same socket refuse to start, and the home's lock
(service.py) a second daemon on the same home; a socket file left by a
crashed daemon (nothing answers on it) is replaced. On shutdown the daemon
stops accepting, refuses queued requests, cancels running work within a few
seconds, unloads its models and removes the socket and its pid file. Logs go
to stderr. `corral serve --stop` stops a running daemon (service.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

from aiohttp import web

from corral.client.api import default_home, default_socket_path
from corral.daemon.app import create_app
from corral.daemon.config import SETTINGS, ConfigError, DaemonConfig
from corral.daemon.os_limits import ThrottleRepeats, raise_open_files_limit
from corral.daemon.service import ServeError, answers, claim_home, stop_daemon

log = logging.getLogger("corral.daemon")

SHUTDOWN_TIMEOUT = 5.0  # seconds running requests get to finish once cancelled
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# aiohttp's line per answered request: client, request line, status, bytes, seconds taken
ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tfs "%{User-Agent}i"'
USAGE = """Usage: corral serve [--stop]

Run the corral daemon in the foreground: it serves the Ollama API on a Unix
socket (and on TCP with CORRAL_HOST), logs to stderr, and stops cleanly on
SIGTERM or Ctrl+C.

Options:
  --stop      stop the running daemon (of CORRAL_HOME / CORRAL_SOCKET) and wait until it is gone
  -h, --help  show this message and the settings

Settings (environment variables):
"""


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m corral.daemon`; returns the exit status."""
    args = sys.argv[1:] if argv is None else argv
    if args in (["--help"], ["-h"]):
        print(usage())
        return 0
    if args == ["--stop"]:
        return _stop()
    if args:
        print(
            f"Error: unknown argument '{args[0]}'; `corral serve --help` lists them",
            file=sys.stderr,
        )
        return 2
    try:
        config = DaemonConfig.from_env()
    except ConfigError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.DEBUG if config.debug else logging.INFO, format=LOG_FORMAT, stream=sys.stderr
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(ThrottleRepeats())
    try:
        asyncio.run(serve(config))
    except ServeError as e:
        if not sys.stderr.isatty():  # a log file: the reason, with a time, among the rest
            log.error("%s", e)
        print(f"Error: {e}", file=sys.stderr)
        return 1
    return 0


def usage() -> str:
    rows = [f"  {s.env:<26} {s.default:<32} {s.meaning}" for s in SETTINGS]
    header = f"  {'VARIABLE':<26} {'DEFAULT':<32} MEANING"
    return USAGE + "\n".join([header, *rows])


def _stop() -> int:
    try:
        print(stop_daemon(default_home(), default_socket_path()), file=sys.stderr)
    except ServeError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    return 0


async def serve(config: DaemonConfig) -> None:
    """Serve until SIGTERM/SIGINT, then shut down cleanly."""
    path = config.socket_path
    with claim_socket(path), claim_home(config.home):
        log.info(
            "corral daemon, pid %d, %d open files allowed", os.getpid(), raise_open_files_limit()
        )
        runner = web.AppRunner(
            create_app(config),
            handler_cancellation=True,
            shutdown_timeout=SHUTDOWN_TIMEOUT,
            access_log_format=ACCESS_LOG_FORMAT,
            keepalive_timeout=config.idle_timeout,  # closes idle ones, and unfinished headers
        )
        await runner.setup()
        inode = None
        try:
            inode = await _start_unix_site(runner, path)
            if config.host:
                await _start_tcp_site(runner, config)
            log.info("listening on %s", path)
            await _until_signalled()
            log.info("shutting down")
        finally:
            await runner.cleanup()
            _remove_socket(path, inode)
        log.info("stopped")


async def _start_tcp_site(runner: web.AppRunner, config: DaemonConfig) -> None:
    assert config.host is not None
    host, port = config.host
    try:
        await web.TCPSite(runner, host, port, shutdown_timeout=SHUTDOWN_TIMEOUT).start()
    except OSError as e:
        raise ServeError(
            f"cannot listen on {host}:{port} ({e.strerror or e}); is another server using it? "
            "Change CORRAL_HOST"
        ) from None
    token = " (API token required)" if config.api_token else ""
    log.info("listening on http://%s:%d%s", host, port, token)


async def _start_unix_site(runner: web.AppRunner, path: Path) -> int:
    """Bind the socket with mode 0600 (no window where others could connect)."""
    old_umask = os.umask(0o177)
    try:
        await web.UnixSite(runner, str(path), shutdown_timeout=SHUTDOWN_TIMEOUT).start()
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    return path.stat().st_ino


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


@contextlib.contextmanager
def claim_socket(path: Path) -> Iterator[None]:
    """Make `path` ours: its folder exists (0700 if we create it), no daemon serves it."""
    if len(os.fsencode(path)) >= 104:  # sun_path is 104-108 bytes depending on the OS
        raise ServeError(f"socket path {path} is too long for a Unix socket; set CORRAL_SOCKET")
    _make_private_dirs(path.parent)
    _check_private(path.parent)
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ServeError(f"another corral daemon is already serving {path}") from None
        _clear_stale_socket(path)
        yield
    finally:
        os.close(fd)  # releases the lock


def _make_private_dirs(folder: Path) -> None:
    """Create `folder` and any missing parents with mode 0700 (existing ones are left alone)."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    for parent in reversed(missing):
        parent.mkdir(mode=0o700, exist_ok=True)


def _check_private(folder: Path) -> None:
    """The socket's folder must be this user's and closed to others' writes: anyone who
    may write there could replace the socket with their own and read every request."""
    info = folder.stat()
    if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ServeError(
            f"the socket's folder {folder} is not private to this user (mode "
            f"{stat.S_IMODE(info.st_mode):o}): others could replace the socket; put "
            "CORRAL_SOCKET in a folder only you can write to (mode 0700), or unset it"
        )


def _clear_stale_socket(path: Path) -> None:
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ServeError(f"{path} exists and is not a socket; move it away or set CORRAL_SOCKET")
    if answers(path):
        raise ServeError(f"another corral daemon is already serving {path}")
    log.info("removing stale socket %s", path)
    path.unlink(missing_ok=True)


def _remove_socket(path: Path, inode: int | None) -> None:
    """Remove the socket we bound (not one another process put there since)."""
    with contextlib.suppress(FileNotFoundError):
        if inode is not None and path.lstat().st_ino == inode:
            path.unlink()
