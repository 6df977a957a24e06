"""Where the daemon keeps its models and listens, as both sides compute it."""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path

import platformdirs

ENV_HOME = "CORRAL_HOME"
ENV_SOCKET = "CORRAL_SOCKET"
ENV_HOST = "CORRAL_HOST"
ENV_API_TOKEN = "CORRAL_API_TOKEN"
ENV_KEEP_ALIVE = "CORRAL_KEEP_ALIVE"
APP_NAME = "corral"
SOCKET_NAME = "corral.sock"


def default_home(environ: Mapping[str, str] = os.environ) -> Path:
    """CORRAL_HOME, else the user's data directory for corral."""
    if home := environ.get(ENV_HOME):
        return Path(home).expanduser()
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def parse_host(text: str) -> tuple[str, int]:
    """(host, port) from CORRAL_HOST's forms: "host:port", ":port", "http://host:port"."""
    rest = text.strip().removeprefix("http://").rstrip("/")
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"'{text}' is not host:port (e.g. 127.0.0.1:11434)")
    return host.strip("[]") or "127.0.0.1", int(port)


def default_socket_path(environ: Mapping[str, str] = os.environ) -> Path:
    """CORRAL_SOCKET, else corral.sock in the user's runtime directory.

    Without a usable runtime directory (no XDG_RUNTIME_DIR), a private folder
    in the temporary directory, named after the user id.
    """
    if path := environ.get(ENV_SOCKET):
        return Path(path).expanduser()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            runtime = Path(platformdirs.user_runtime_dir(APP_NAME, appauthor=False))
    except OSError:
        runtime = Path(tempfile.gettempdir()) / f"{APP_NAME}-{os.getuid()}"
    return runtime / SOCKET_NAME
