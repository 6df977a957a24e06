"""The package indexes pip would use, read the way pip reads its configuration.

Files, lowest precedence first: the global ones ($XDG_CONFIG_DIRS/pip/pip.conf,
/etc/pip.conf), the user's (~/.pip/pip.conf, $XDG_CONFIG_HOME/pip/pip.conf),
the environment's (sys.prefix/pip.conf), then $PIP_CONFIG_FILE (whose presence
skips the user's files; os.devnull skips all files). Within the merged files a
command section beats [global]; corral reads [install] and then [download]
(a model pull is a download). Environment variables (PIP_INDEX_URL,
PIP_EXTRA_INDEX_URL, PIP_NO_INDEX, PIP_CERT) beat every file.
"""

from __future__ import annotations

import configparser
import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_INDEX = "https://pypi.org/simple"
SECTIONS = ("global", "install", "download")  # increasing precedence
KEYS = ("index-url", "extra-index-url", "no-index", "cert", "find-links")


@dataclass(frozen=True)
class PipConfig:
    index_url: str = DEFAULT_INDEX
    extra_index_urls: tuple[str, ...] = ()
    no_index: bool = False
    cert: str | None = None
    find_links: tuple[str, ...] = ()

    @property
    def indexes(self) -> tuple[str, ...]:
        """Index URLs in the order pip consults them (none with --no-index)."""
        if self.no_index:
            return ()
        return (self.index_url, *(u for u in self.extra_index_urls if u != self.index_url))


def config_files(environ: Mapping[str, str]) -> list[Path]:
    """pip's configuration files, lowest precedence first."""
    env_file = environ.get("PIP_CONFIG_FILE")
    if env_file == os.devnull:
        return []
    xdg_dirs = environ.get("XDG_CONFIG_DIRS") or "/etc/xdg"
    files = [Path(d) / "pip" / "pip.conf" for d in xdg_dirs.split(os.pathsep) if d]
    files.append(Path("/etc/pip.conf"))
    if not (env_file and Path(env_file).exists()):
        home = Path(environ.get("HOME") or Path.home())
        config_home = Path(environ.get("XDG_CONFIG_HOME") or home / ".config")
        files += [home / ".pip" / "pip.conf", config_home / "pip" / "pip.conf"]
    files.append(Path(sys.prefix) / "pip.conf")
    if env_file:
        files.append(Path(env_file))
    return files


def load_pip_config(environ: Mapping[str, str] | None = None) -> PipConfig:
    environ = os.environ if environ is None else environ
    merged: dict[str, str] = {}
    for path in config_files(environ):
        merged.update(_read(path))
    values = {
        key: _pick(merged, key, environ.get("PIP_" + key.upper().replace("-", "_"))) for key in KEYS
    }
    return PipConfig(
        index_url=(values["index-url"] or DEFAULT_INDEX).strip(),
        extra_index_urls=tuple((values["extra-index-url"] or "").split()),
        no_index=_truthy(values["no-index"]),
        cert=values["cert"] or None,
        find_links=tuple((values["find-links"] or "").split()),
    )


def _read(path: Path) -> dict[str, str]:
    """`section.key` -> value for the sections corral reads ('_' in keys -> '-')."""
    parser = configparser.RawConfigParser()
    try:
        if not parser.read(path, encoding="utf-8"):
            return {}
    except (configparser.Error, OSError, UnicodeDecodeError) as e:
        log.warning("ignoring unreadable pip configuration %s: %s", path, e)
        return {}
    return {
        f"{section}.{key.replace('_', '-')}": value
        for section in parser.sections()
        if section in SECTIONS
        for key, value in parser.items(section)
    }


def _pick(merged: dict[str, str], key: str, env_value: str | None) -> str | None:
    if env_value is not None:
        return env_value
    for section in reversed(SECTIONS):
        if f"{section}.{key}" in merged:
            return merged[f"{section}.{key}"]
    return None


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")
