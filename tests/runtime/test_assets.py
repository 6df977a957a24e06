"""Sanity checks of the asset plumbing: fetched files are the recorded ones."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

import assets


@pytest.mark.slow
def test_smollm2_gguf_matches_recorded_sha256(smollm2_path: Path) -> None:
    data = smollm2_path.read_bytes()
    assert data[:4] == b"GGUF"
    assert hashlib.sha256(data).hexdigest() == assets.SMOLLM2_SHA256
    assert smollm2_path.parent == assets.cache_dir()


@pytest.mark.slow
def test_vocab_file_has_test_vectors_beside_it() -> None:
    path = assets.vocab_file("gpt-2")
    assert path.read_bytes()[:4] == b"GGUF"
    inputs = path.with_name(path.name + ".inp").read_text(encoding="utf-8")
    outputs = path.with_name(path.name + ".out").read_text(encoding="utf-8")
    n_inputs = len(inputs.split("\n__ggml_vocab_test__\n"))
    assert n_inputs > 10
    assert len(outputs.splitlines()) >= n_inputs - 1
    with pytest.raises(FileNotFoundError, match="gpt-2"):
        assets.vocab_file("no-such-vocab")
