"""corral reads the indexes pip would use; checked against `pip config` itself."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from corral.registry.pip_config import DEFAULT_INDEX, load_pip_config


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An environment with a private HOME and XDG dirs, so only our files count."""
    env = {
        "HOME": str(tmp_path / "home"),
        "XDG_CONFIG_HOME": str(tmp_path / "home" / ".config"),
        "XDG_CONFIG_DIRS": str(tmp_path / "xdg"),
        "PATH": os.environ.get("PATH", ""),
    }
    env.update(extra)
    return env


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _pip_value(env: dict[str, str], key: str) -> str | None:
    """What pip itself reports for `key` (e.g. 'global.index-url')."""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in out.splitlines():
        name, _, value = line.partition("=")
        if name == key:
            return value.strip("'")
    return None


def test_defaults_without_any_configuration(tmp_path: Path) -> None:
    config = load_pip_config(_env(tmp_path, PIP_CONFIG_FILE=os.devnull))
    assert config.indexes == (DEFAULT_INDEX,)


def test_user_file_matches_pip(tmp_path: Path) -> None:
    env = _env(tmp_path)
    if Path("/etc/pip.conf").exists() and "index-url" in Path("/etc/pip.conf").read_text():
        pytest.skip("/etc/pip.conf sets an index on this machine")
    _write(
        tmp_path / "home" / ".config" / "pip" / "pip.conf",
        "[global]\nindex-url = https://mirror.example/simple\n"
        "extra-index-url =\n    https://a.example/simple\n    file:///srv/simple\n",
    )
    config = load_pip_config(env)
    assert (
        config.index_url == _pip_value(env, "global.index-url") == "https://mirror.example/simple"
    )
    assert config.extra_index_urls == ("https://a.example/simple", "file:///srv/simple")
    assert config.indexes == (
        "https://mirror.example/simple",
        "https://a.example/simple",
        "file:///srv/simple",
    )


def test_precedence(tmp_path: Path) -> None:
    _write(tmp_path / "xdg" / "pip" / "pip.conf", "[global]\nindex-url = https://global/simple\n")
    _write(tmp_path / "home" / ".pip" / "pip.conf", "[global]\nindex-url = https://user/simple\n")
    env = _env(tmp_path)
    assert load_pip_config(env).index_url == "https://user/simple"
    _write(tmp_path / "home" / ".pip" / "pip.conf", "[install]\nindex_url = https://inst/simple\n")
    assert load_pip_config(env).index_url == "https://inst/simple"  # command section, '_' key
    custom = tmp_path / "custom.conf"
    _write(custom, "[global]\nindex-url = https://custom/simple\nno-index = false\n")
    env["PIP_CONFIG_FILE"] = str(custom)  # skips the user's files
    assert load_pip_config(env).index_url == "https://custom/simple"
    env["PIP_INDEX_URL"] = "https://env/simple"
    env["PIP_EXTRA_INDEX_URL"] = "https://x/simple https://y/simple"
    config = load_pip_config(env)
    assert config.indexes == ("https://env/simple", "https://x/simple", "https://y/simple")
    env["PIP_NO_INDEX"] = "yes"
    assert load_pip_config(env).indexes == ()


def test_unreadable_file_is_ignored(tmp_path: Path) -> None:
    _write(tmp_path / "home" / ".pip" / "pip.conf", "this is [not an ini file\n")
    assert load_pip_config(_env(tmp_path)).index_url == DEFAULT_INDEX
