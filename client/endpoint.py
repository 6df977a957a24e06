"""Where the daemon listens: a Unix socket (the default) or a TCP host and port."""

from __future__ import annotations

import http.client
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from corral.client.api import ENV_HOST, default_socket_path, parse_host


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a Unix domain socket."""

    def __init__(self, path: Path, timeout: float | None = None) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(os.fspath(self.socket_path))
        except OSError:
            sock.close()
            raise
        self.sock = sock


@dataclass(frozen=True)
class Endpoint:
    """Where the daemon listens: a Unix socket path, or a TCP host and port."""

    socket_path: Path | None = None
    host: str = ""
    port: int = 0

    @classmethod
    def resolve(cls, host: str | None = None, environ: Mapping[str, str] = os.environ) -> Endpoint:
        """`host` (a socket path, unix:PATH or host:port), else CORRAL_HOST, else the socket."""
        text = host or environ.get(ENV_HOST, "")
        if not text:
            return cls(socket_path=default_socket_path(environ))
        if text.startswith(("unix:", "/")):
            return cls(socket_path=Path(text.removeprefix("unix:").removeprefix("//")))
        name, port = parse_host(text)
        return cls(host=name, port=port)

    def connection(self, timeout: float | None) -> http.client.HTTPConnection:
        if self.socket_path is not None:
            return UnixHTTPConnection(self.socket_path, timeout=timeout)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def __str__(self) -> str:
        return str(self.socket_path) if self.socket_path else f"http://{self.host}:{self.port}"
