"""Where the daemon keeps its models and listens, as both sides compute it."""

from __future__ import annotations

import hashlib
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
OLLAMA_PORT = 11434  # CORRAL_HOST without a port, as OLLAMA_HOST
SOCKET_NAME = "corral.sock"
HOME_HASH_CHARS = 12  # of the sha256 of a CORRAL_HOME, naming its socket


def default_home(environ: Mapping[str, str] = os.environ) -> Path:
    """CORRAL_HOME, else the user's data directory for corral."""
    if home := environ.get(ENV_HOME):
        return Path(home).expanduser()
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def parse_host(text: str) -> tuple[str, int]:
    """(host, port) from CORRAL_HOST's forms: "host:port", ":port", "http://host:port",
    and "host" alone on Ollama's port, as OLLAMA_HOST takes them."""
    rest = text.strip().removeprefix("http://").rstrip("/")
    if rest and ":" not in rest:
        rest = f"{rest}:{OLLAMA_PORT}"
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"'{text}' is not host:port (e.g. 127.0.0.1:11434)")
    return host.strip("[]") or "127.0.0.1", int(port)


def default_socket_path(environ: Mapping[str, str] = os.environ) -> Path:
    """CORRAL_SOCKET, else corral.sock in the user's runtime directory; a CORRAL_HOME
    of its own gets a socket of its own there (corral-<hash of the home>.sock), so a
    client of one home never talks to the daemon of another.

    Without a usable runtime directory (no XDG_RUNTIME_DIR), a private folder
    in the temporary directory, named after the user id.
    """
    if path := environ.get(ENV_SOCKET):
        return Path(path).expanduser()
    name = SOCKET_NAME
    if environ.get(ENV_HOME) and (home := default_home(environ)) != default_home({}):
        digest = hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:HOME_HASH_CHARS]
        name = f"corral-{digest}.sock"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            runtime = Path(platformdirs.user_runtime_dir(APP_NAME, appauthor=False))
    except OSError:
        runtime = Path(tempfile.gettempdir()) / f"{APP_NAME}-{os.getuid()}"
    return runtime / name
