"""The daemon's settings, read once from the environment into a frozen DaemonConfig.

Every setting is one row of SETTINGS (environment variable, default, meaning),
so `corral serve --help` and the README can print the same table.
"""

from __future__ import annotations

import ipaddress
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

T = TypeVar("T")

DEFAULT_KEEP_ALIVE = 300.0  # seconds: Ollama's 5 minutes
DEFAULT_NUM_CTX = 4096


class ConfigError(ValueError):
    """A setting has a value corral cannot use; the message names the variable."""


@dataclass(frozen=True)
class Setting:
    env: str
    default: str
    meaning: str


SETTINGS: tuple[Setting, ...] = (
    Setting(ENV_HOME, "platformdirs user data dir", "where models and logs are stored"),
    Setting(ENV_SOCKET, "<user runtime dir>/corral.sock", "the Unix socket the daemon serves"),
    Setting(ENV_HOST, "(unset)", "also serve TCP on host:port (loopback only for now)"),
    Setting(ENV_KEEP_ALIVE, "5m", "how long an idle model stays loaded (0 unloads, -1 forever)"),
    Setting("CORRAL_NUM_CTX", str(DEFAULT_NUM_CTX), "default context window (tokens)"),
    Setting("CORRAL_MAX_LOADED_MODELS", "1", "models kept in memory at once"),
    Setting("CORRAL_NUM_PARALLEL", "1", "requests one loaded model serves at a time"),
    Setting("CORRAL_DEBUG", "0", "log at debug level"),
)


@dataclass(frozen=True)
class DaemonConfig:
    home: Path
    socket_path: Path
    host: tuple[str, int] | None = None
    keep_alive: float = DEFAULT_KEEP_ALIVE  # seconds; math.inf keeps models forever
    num_ctx: int = DEFAULT_NUM_CTX
    max_loaded_models: int = 1
    num_parallel: int = 1
    debug: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> DaemonConfig:
        """Read every setting; a bad value raises ConfigError naming the variable."""
        return cls(
            home=default_home(environ),
            socket_path=default_socket_path(environ),
            host=_read(environ, ENV_HOST, _parse_host, None),
            keep_alive=_read(environ, ENV_KEEP_ALIVE, parse_duration, DEFAULT_KEEP_ALIVE),
            num_ctx=_read(environ, "CORRAL_NUM_CTX", _positive_int, DEFAULT_NUM_CTX),
            max_loaded_models=_read(environ, "CORRAL_MAX_LOADED_MODELS", _positive_int, 1),
            num_parallel=_read(environ, "CORRAL_NUM_PARALLEL", _positive_int, 1),
            debug=_read(environ, "CORRAL_DEBUG", _flag, False),
        )


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


def _flag(text: str) -> bool:
    return text.lower() not in ("0", "false", "no", "off")


def _parse_host(text: str) -> tuple[str, int]:
    """host:port for the TCP listener; only loopback until API tokens exist (issue 5)."""
    host, port = parse_host(text)
    if not ipaddress.ip_address("127.0.0.1" if host == "localhost" else host).is_loopback:
        raise ValueError("only loopback addresses are allowed for now")
    return host, port
