"""The daemon's settings, read once from the environment into a frozen DaemonConfig.

Every setting is one row of SETTINGS (environment variable, default, meaning),
so `corral serve --help` and the README can print the same table.
"""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from corral.client.api import (
    ENV_HOME,
    ENV_HOST,
    ENV_KEEP_ALIVE,
    ENV_SOCKET,
    WireError,
    default_home,
    default_socket_path,
    parse_duration,
    parse_host,
)
from corral.daemon.memory import SAFE_FRACTION, default_budget, parse_size

T = TypeVar("T")

DEFAULT_KEEP_ALIVE = 300.0  # seconds: Ollama's 5 minutes
DEFAULT_NUM_CTX = 4096
DEFAULT_MAX_LOADED = 3  # Ollama's default for CPU inference; memory usually decides first
DEFAULT_MAX_QUEUE = 512  # Ollama's OLLAMA_MAX_QUEUE
DEFAULT_IDLE_TIMEOUT = 75.0  # seconds: aiohttp's keep-alive before 3.12 (it is an hour now)
DEFAULT_NUM_PARALLEL = 4  # as Ollama since 0.2 where memory allows: batched decoding makes it pay
DEFAULT_MIN_FREE_DISK = 1 << 30  # an upload never fills the disk the user's other programs need
ENV_MIN_FREE_DISK = "CORRAL_MIN_FREE_DISK"
ENV_TOKEN = "CORRAL_API_TOKEN"
ENV_ORIGINS = "CORRAL_ORIGINS"


class ConfigError(ValueError):
    """A setting has a value corral cannot use; the message names the variable."""


@dataclass(frozen=True)
class Setting:
    env: str
    default: str
    meaning: str


SETTINGS: tuple[Setting, ...] = (
    Setting(ENV_HOME, "platformdirs user data dir", "where models, logs and the pid file live"),
    Setting(
        ENV_SOCKET,
        "<user runtime dir>/corral/corral.sock",
        "the Unix socket the daemon serves, in a folder only you may write to "
        "(a CORRAL_HOME of its own: corral-<hash>.sock beside it)",
    ),
    Setting(
        ENV_HOST,
        "(unset)",
        "also serve TCP on host:port (port 11434 if left out); a non-loopback host needs "
        "CORRAL_API_TOKEN; "
        "TCP requests may not name the daemon's files (upload with /api/blobs)",
    ),
    Setting(ENV_TOKEN, "(unset)", "bearer token every TCP request must send (Authorization)"),
    Setting(
        ENV_ORIGINS,
        "(unset)",
        "extra browser origins allowed, comma-separated, * wildcards (localhost always is)",
    ),
    Setting(ENV_KEEP_ALIVE, "5m", "how long an idle model stays loaded (0 unloads, -1 forever)"),
    Setting(
        "CORRAL_NUM_CTX",
        str(DEFAULT_NUM_CTX),
        "default context window (tokens); a request asking for less uses a loaded copy "
        "with a larger window, with no reload",
    ),
    Setting("CORRAL_MAX_LOADED_MODELS", str(DEFAULT_MAX_LOADED), "models kept in memory at once"),
    Setting(
        "CORRAL_MAX_MEMORY",
        f"{SAFE_FRACTION:.0%} of RAM",
        "memory for loaded models (16GB, 512MiB, 60%); idle ones are unloaded to make room",
    ),
    Setting(
        "CORRAL_NUM_PARALLEL",
        str(DEFAULT_NUM_PARALLEL),
        "requests one loaded model serves at once, decoded together in one batch "
        "(fewer if CORRAL_MAX_MEMORY holds fewer KV caches)",
    ),
    Setting(
        "CORRAL_MAX_QUEUE",
        str(DEFAULT_MAX_QUEUE),
        "requests that may wait for a model or a slot; more are refused with 503",
    ),
    Setting(
        "CORRAL_IDLE_TIMEOUT",
        "75s",
        "a connection idle before or between requests, or stuck in a request's headers, "
        "for this long is closed",
    ),
    Setting(
        ENV_MIN_FREE_DISK,
        "1GiB",
        "disk space an upload (POST /api/blobs) leaves free in CORRAL_HOME; "
        "one that would take it is refused with 507",
    ),
    Setting("CORRAL_DEBUG", "0", "log at debug level"),
)


@dataclass(frozen=True)
class DaemonConfig:
    home: Path
    socket_path: Path
    host: tuple[str, int] | None = None
    api_token: str | None = None
    origins: tuple[str, ...] = ()  # extra allowed browser origins (patterns)
    keep_alive: float = DEFAULT_KEEP_ALIVE  # seconds; math.inf keeps models forever
    num_ctx: int = DEFAULT_NUM_CTX
    max_loaded_models: int = DEFAULT_MAX_LOADED
    max_memory: int | None = None  # bytes; None: no limit
    num_parallel: int = DEFAULT_NUM_PARALLEL
    max_queue: int = DEFAULT_MAX_QUEUE
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT  # seconds
    min_free_disk: int = DEFAULT_MIN_FREE_DISK  # bytes an upload leaves free
    debug: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> DaemonConfig:
        """Read every setting; a bad value raises ConfigError naming the variable."""
        config = cls(
            home=default_home(environ),
            socket_path=default_socket_path(environ),
            host=_read(environ, ENV_HOST, parse_host, None),
            api_token=environ.get(ENV_TOKEN, "").strip() or None,
            origins=_read(environ, ENV_ORIGINS, _parse_origins, ()),
            keep_alive=_read(environ, ENV_KEEP_ALIVE, parse_duration, DEFAULT_KEEP_ALIVE),
            num_ctx=_read(environ, "CORRAL_NUM_CTX", _positive_int, DEFAULT_NUM_CTX),
            max_loaded_models=_read(
                environ, "CORRAL_MAX_LOADED_MODELS", _positive_int, DEFAULT_MAX_LOADED
            ),
            max_memory=_read(environ, "CORRAL_MAX_MEMORY", parse_size, None) or default_budget(),
            num_parallel=_read(environ, "CORRAL_NUM_PARALLEL", _positive_int, DEFAULT_NUM_PARALLEL),
            max_queue=_read(environ, "CORRAL_MAX_QUEUE", _queue_size, DEFAULT_MAX_QUEUE),
            idle_timeout=_read(environ, "CORRAL_IDLE_TIMEOUT", _timeout, DEFAULT_IDLE_TIMEOUT),
            min_free_disk=_read(environ, ENV_MIN_FREE_DISK, _disk_size, DEFAULT_MIN_FREE_DISK),
            debug=_read(environ, "CORRAL_DEBUG", _flag, False),
        )
        config.check_exposure()
        return config

    def check_exposure(self) -> None:
        """A TCP listener reachable from other machines needs a token."""
        if self.host is not None and not is_loopback(self.host[0]) and not self.api_token:
            host, port = self.host
            raise ConfigError(
                f"{ENV_HOST}={host}:{port} accepts connections from other machines: set "
                f"{ENV_TOKEN} to a secret that clients send as 'Authorization: Bearer <token>', "
                "or listen on 127.0.0.1"
            )


def _disk_size(text: str) -> int:
    if text.endswith("%"):
        raise ValueError("use a size like 1GB or 512MiB")
    return parse_size(text)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost; any other name or address counts as exposed."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read(environ: Mapping[str, str], name: str, parse: Callable[[str], T], default: T) -> T:
    text = environ.get(name, "").strip()
    if not text:
        return default
    try:
        return parse(text)
    except (ValueError, WireError) as e:
        raise ConfigError(f"{name}={text!r} is not valid: {e}") from None


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be 1 or more")
    return value


def _timeout(text: str) -> float:
    seconds = parse_duration(text)
    if not 0 < seconds < math.inf:
        raise ValueError("use a positive duration like 75s or 5m")
    return seconds


def _flag(text: str) -> bool:
    return text.lower() not in ("0", "false", "no", "off")


def _queue_size(text: str) -> int:
    """A request waits in the queue while its model loads: with 0, none could ever load."""
    value = int(text)
    if value < 1:
        raise ValueError("must be 1 or more (a request waits in the queue while its model loads)")
    return value


def _parse_origins(text: str) -> tuple[str, ...]:
    """Comma-separated origins like https://app.example.com or http://*.example.com."""
    origins = tuple(o.strip().rstrip("/").lower() for o in text.split(",") if o.strip())
    for origin in origins:
        if "://" not in origin and origin != "*":
            raise ValueError(f"'{origin}' is not an origin like https://app.example.com")
    return origins
