"""Fixtures: a real `corral serve` per test module, and a tiny random-weight llama GGUF."""

from __future__ import annotations

import functools
import shutil
import socket
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from serving import Daemon, short_socket_dir
from tiny import write_tiny_llama

TINY_NAME = "tiny:latest"  # what pulling the file tiny.gguf installs it as


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("models") / "tiny.gguf")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with Daemon.start_in(tmp_path_factory.mktemp("home")) as d:
        yield d


@pytest.fixture(scope="module")
def tiny(daemon: Daemon, tiny_gguf: Path) -> str:
    """The tiny model pulled into the module's daemon from its local file; its name."""
    final = daemon.client.pull(str(tiny_gguf), stream=False)
    assert final.status == "success"
    return TINY_NAME


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def tcp_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A daemon that also listens on loopback TCP (CORRAL_HOST), for Ollama's and
    OpenAI's own clients; its address is `daemon.env["CORRAL_HOST"]`."""
    host = f"127.0.0.1:{free_port()}"
    with Daemon.start_in(tmp_path_factory.mktemp("home"), CORRAL_HOST=host) as d:
        yield d


@pytest.fixture(scope="module")
def base_url(tcp_daemon: Daemon) -> str:
    return f"http://{tcp_daemon.env['CORRAL_HOST']}"


@pytest.fixture(scope="module")
def tcp_tiny(tcp_daemon: Daemon, tiny_gguf: Path) -> str:
    """The tiny model pulled into the TCP daemon; its name."""
    assert tcp_daemon.client.pull(str(tiny_gguf), stream=False).status == "success"
    return TINY_NAME


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A short private folder for a Unix socket (pytest's tmp_path can be too long)."""
    folder = short_socket_dir()
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """(folder, base URL): a plain HTTP server on loopback serving the folder's files, for
    pulls over TCP (which may not name the daemon's own files)."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(QuietFileHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class QuietFileHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass
