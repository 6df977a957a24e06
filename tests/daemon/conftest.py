"""Fixtures: a real `corral serve` per test module, and a tiny random-weight llama GGUF."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
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


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A short private folder for a Unix socket (pytest's tmp_path can be too long)."""
    folder = short_socket_dir()
    yield folder
    shutil.rmtree(folder, ignore_errors=True)
