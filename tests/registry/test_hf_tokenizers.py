"""Tokenizer conversion against llama.cpp's own vocabularies (ggml-vocab-*.gguf, slow: the
llama-cpp-python sdist): HF tokenizer files are written from each vocabulary (tokenizer.json
with the family's real pre-tokenizer rules, or a SentencePiece tokenizer.model), converted
back by corral, and must give llama.cpp's vocabulary, merges, types, special tokens and
pre-tokenizer family, and its tokenization test vectors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

import assets
from corral.registry.convert import Checkpoint
from corral.registry.convert.architectures import LLAMA, QWEN2
from corral.registry.convert.tokenizer import Vocab, build_vocab, special_tokens
from corral.registry.convert.vocab_bpe import identify_pre
from corral.registry.errors import SourceError
from corral.runtime.gguf import GGUFFile
from corral.runtime.tokenizer import load_tokenizer
from corral.runtime.tokenizer.pretokenize import pre_tokenizer
from hf_checkpoint import tokenizer_files
from spm_model import spm_model

BPE = ["gpt-2", "llama-bpe", "qwen2", "starcoder"]


def metadata(name: str) -> dict[str, Any]:
    with GGUFFile.open(assets.vocab_file(name)) as f:
        return {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in f.metadata.items()}


def write_files(folder: Path, files: dict[str, Any]) -> Checkpoint:
    folder.mkdir()
    for name, data in files.items():
        path = folder / name
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return Checkpoint.from_folder(folder)


def vocab_gguf(path: Path, vocab: Vocab) -> Path:
    w = gguf.GGUFWriter(str(path), "llama")
    vocab.write(w)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def read_vectors(path: Path) -> list[tuple[str, list[int]]]:
    inputs = (
        path.with_name(path.name + ".inp")
        .read_text(encoding="utf-8")
        .split("\n__ggml_vocab_test__\n")
    )
    if inputs[-1] == "":
        inputs.pop()
    lines = path.with_name(path.name + ".out").read_text(encoding="utf-8").splitlines()
    return [(t, [int(x) for x in line.split()]) for t, line in zip(inputs, lines, strict=True)]


@pytest.mark.slow
@pytest.mark.parametrize("name", BPE)
def test_bpe_vocab_from_tokenizer_json(name: str, tmp_path: Path) -> None:
    md = metadata(name)
    files: dict[str, Any] = dict(tokenizer_files(md))
    files["config.json"] = {"vocab_size": len(md["tokenizer.ggml.tokens"])}
    vocab = build_vocab(write_files(tmp_path / "ckpt", files), QWEN2, files["config.json"])
    assert vocab.model == "gpt2"
    assert vocab.tokens == list(md["tokenizer.ggml.tokens"])
    assert vocab.types == [int(t) for t in md["tokenizer.ggml.token_type"]]
    assert vocab.merges == list(md["tokenizer.ggml.merges"])
    assert pre_tokenizer(vocab.pre) == pre_tokenizer(md["tokenizer.ggml.pre"])
    for role, key in (("bos", "bos"), ("eos", "eos"), ("unk", "unknown"), ("pad", "padding")):
        expected = md.get(f"tokenizer.ggml.{key}_token_id")
        assert vocab.special.get(role) == (None if expected is None else int(expected)), role


@pytest.mark.slow
def test_sentencepiece_vocab_from_tokenizer_model(tmp_path: Path) -> None:
    path = assets.vocab_file("llama-spm")
    md = metadata("llama-spm")
    tokens = list(md["tokenizer.ggml.tokens"])
    scores = [float(s) for s in md["tokenizer.ggml.scores"]]
    types = [int(t) for t in md["tokenizer.ggml.token_type"]]
    config = {"vocab_size": len(tokens), "bos_token_id": 1, "eos_token_id": 2}
    tok_config = {"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>"}
    files = {
        "tokenizer.model": spm_model(tokens, scores, types, model_type=2),
        "tokenizer_config.json": tok_config,
        "config.json": config,
    }
    vocab = build_vocab(write_files(tmp_path / "ckpt", files), LLAMA, config)
    assert (vocab.model, vocab.pre) == ("llama", "default")
    assert (vocab.tokens, vocab.types) == (tokens, types)
    assert vocab.scores == pytest.approx(scores)
    assert vocab.special == {"bos": 1, "eos": 2}
    assert vocab.add == {"bos": True, "eos": False}
    with GGUFFile.open(vocab_gguf(tmp_path / "v.gguf", vocab)) as f:
        tok = load_tokenizer(f.metadata)
    for text, expected in read_vectors(path):
        assert tok.encode(text, add_special=False, parse_special=False) == expected, text


def test_pre_tokenizer_rules_are_matched_not_guessed() -> None:
    files = tokenizer_files(
        {
            "tokenizer.ggml.tokens": ["a", "b"],
            "tokenizer.ggml.token_type": [1, 1],
            "tokenizer.ggml.merges": [],
            "tokenizer.ggml.pre": "llama-bpe",
        }
    )
    pre = files["tokenizer.json"]["pre_tokenizer"]
    assert identify_pre(pre, "x") == "llama-bpe"
    pre["pretokenizers"][0]["pattern"]["Regex"] = r"\p{L}+|\s+"
    with pytest.raises(SourceError, match=r"unknown BPE pre-tokenizer \(splits: \\p\{L\}\+\|\\s\+"):
        identify_pre(pre, "x")
    with pytest.raises(SourceError, match="pre-tokenizer Metaspace is not supported"):
        identify_pre({"type": "Metaspace", "replacement": "▁"}, "x")


def test_special_tokens_like_gguf_py() -> None:
    tokenizer = {
        "added_tokens": [
            {"id": 7, "content": "<|begin_of_text|>", "special": True},
            {"id": 8, "content": "<|end_of_text|>", "special": True},
        ],
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [
                {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
            ],
        },
    }
    tok_config = {"bos_token": "<|begin_of_text|>", "eos_token": {"content": "<|end_of_text|>"}}
    special, add = special_tokens(tokenizer, tok_config, {"pad_token_id": 3}, 10)
    assert special == {"bos": 7, "eos": 8, "pad": 3}
    assert add == {"bos": True}
    _, add = special_tokens(tokenizer, tok_config | {"add_bos_token": False}, {}, 10)
    assert add == {"bos": False}
