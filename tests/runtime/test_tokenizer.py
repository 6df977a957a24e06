"""Byte-level BPE tokenizer: a tiny hand-built vocabulary, then llama.cpp's own vectors."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gguf import GGUFWriter

import assets
from corral.runtime.gguf import GGUFFile
from corral.runtime.tokenizer import (
    BPETokenizer,
    Tokenizer,
    TokenizerError,
    UnsupportedTokenizer,
    load_tokenizer,
)
from corral.runtime.tokenizer import pretokenize as pt
from corral.runtime.tokenizer.bpe import TokenType

REFS = Path(__file__).parents[1] / "data" / "smollm2_tokenize.json"

# -- a tiny vocabulary: the 256 byte tokens (id == byte), a few merges, special tokens --

EXTRA = {
    "he": TokenType.NORMAL,
    "Ġt": TokenType.NORMAL,
    "Ġthe": TokenType.NORMAL,
    "ll": TokenType.NORMAL,
    "llo": TokenType.NORMAL,
    "aa": TokenType.NORMAL,
    "Ġxyz": TokenType.NORMAL,  # a token no merge can reach
    "<|endoftext|>": TokenType.CONTROL,
    "<|im_start|>": TokenType.CONTROL,
    "<|im_end|>": TokenType.NORMAL,  # mistyped in the file; llama.cpp makes it CONTROL
    "<tool>": TokenType.USER_DEFINED,
    "abcd": TokenType.CONTROL,
    "xa": TokenType.CONTROL,
}
MERGES = ["h e", "Ġ t", "Ġt he", "l l", "ll o", "a a"]


def byte_tokens() -> list[str]:
    """GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other
    68 bytes for U+0100.. in byte order. Token id == byte value."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    others = [b for b in range(256) if b not in printable]
    chars = {b: chr(b) for b in printable} | {b: chr(0x100 + i) for i, b in enumerate(others)}
    return [chars[b] for b in range(256)]


def tiny_metadata(**overrides: Any) -> dict[str, Any]:
    tokens = byte_tokens() + list(EXTRA)
    meta: dict[str, Any] = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "gpt-2",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": np.array([1] * 256 + list(EXTRA.values()), np.int32),
        "tokenizer.ggml.merges": MERGES,
        "tokenizer.ggml.bos_token_id": tokens.index("<|im_start|>"),
        "tokenizer.ggml.eos_token_id": tokens.index("<|endoftext|>"),
        "tokenizer.ggml.add_bos_token": False,
    }
    meta.update(overrides)
    return meta


@pytest.fixture
def tok() -> BPETokenizer:
    return BPETokenizer.from_gguf(tiny_metadata())


def tid(tok: BPETokenizer, text: str) -> int:
    found = tok.token_id(text)
    assert found is not None, text
    return found


def test_merges_apply_lowest_rank_first(tok: BPETokenizer) -> None:
    assert tok.encode(" the") == [tid(tok, "Ġthe")]
    assert tok.encode("hello") == [tid(tok, "he"), tid(tok, "llo")]
    assert tok.encode("the") == [ord("t"), tid(tok, "he")]


def test_equal_rank_pairs_merge_leftmost_first(tok: BPETokenizer) -> None:
    assert tok.encode("aaa") == [tid(tok, "aa"), ord("a")]
    assert tok.encode("aaaa") == [tid(tok, "aa"), tid(tok, "aa")]


def test_unmerged_bytes_map_to_byte_tokens(tok: BPETokenizer) -> None:
    assert tok.encode("é\n") == [0xC3, 0xA9, 0x0A]
    assert tok.encode(" ") == [0x20]


def test_ignore_merges_families_take_whole_word_tokens() -> None:
    gpt2 = BPETokenizer.from_gguf(tiny_metadata())
    llama3 = BPETokenizer.from_gguf(tiny_metadata(**{"tokenizer.ggml.pre": "llama-bpe"}))
    assert gpt2.encode(" xyz") == [0x20, ord("x"), ord("y"), ord("z")]
    assert llama3.encode(" xyz") == [tid(llama3, "Ġxyz")]


def test_special_tokens_split_longest_first_like_llama_cpp(tok: BPETokenizer) -> None:
    # "abcd" (4 chars) is cut out before "xa" (2) is looked for, although "xa" starts first.
    assert tok.encode("xabcd") == [ord("x"), tid(tok, "abcd")]
    ids = tok.encode("<|im_start|>hello<|im_end|>")
    assert ids == [
        tid(tok, "<|im_start|>"),
        tid(tok, "he"),
        tid(tok, "llo"),
        tid(tok, "<|im_end|>"),
    ]


def test_parse_special_false_keeps_only_user_defined_tokens(tok: BPETokenizer) -> None:
    ids = tok.encode("<|im_start|><tool>", parse_special=False)
    assert ids[-1] == tid(tok, "<tool>")
    assert tid(tok, "<|im_start|>") not in ids
    assert tok.decode(ids[:-1]) == "<|im_start|>"


def test_add_special_follows_gguf_flags() -> None:
    plain = BPETokenizer.from_gguf(tiny_metadata())
    both = BPETokenizer.from_gguf(
        tiny_metadata(
            **{"tokenizer.ggml.add_bos_token": True, "tokenizer.ggml.add_eos_token": True}
        )
    )
    assert plain.encode("he") == [tid(plain, "he")]
    assert both.encode("he") == [both.bos_id, tid(both, "he"), both.eos_id]
    assert both.encode("he", add_special=False) == [tid(both, "he")]
    assert both.encode("") == [both.bos_id, both.eos_id]


def test_llama3_family_adds_bos_unless_gguf_says_otherwise() -> None:
    meta = tiny_metadata(**{"tokenizer.ggml.pre": "llama-bpe"})
    del meta["tokenizer.ggml.add_bos_token"]
    tok = BPETokenizer.from_gguf(meta)
    assert tok.add_bos and tok.encode("he")[0] == tok.bos_id


def test_end_of_generation_ids_and_control_override(tok: BPETokenizer) -> None:
    end, im_end = tid(tok, "<|endoftext|>"), tid(tok, "<|im_end|>")
    assert tok.eos_id == end
    assert tok.eog_ids == frozenset({end, im_end})
    assert tok.is_control(im_end) and tok.is_eog(im_end)
    assert not tok.is_control(tid(tok, "<tool>")) and not tok.is_eog(tok.bos_id)


def test_decode_renders_control_tokens_only_when_asked(tok: BPETokenizer) -> None:
    ids = tok.encode("<|im_start|>hi<tool><|im_end|>")
    assert tok.decode(ids) == "<|im_start|>hi<tool><|im_end|>"
    assert tok.decode(ids, special=False) == "hi<tool>"
    assert tok.token_bytes(tid(tok, "<|im_end|>"), special=False) == b""


def test_token_bytes_may_split_a_character(tok: BPETokenizer) -> None:
    ids = tok.encode("é")
    assert [tok.token_bytes(i) for i in ids] == [b"\xc3", b"\xa9"]
    assert tok.decode(ids[:1]) == "\ufffd"
    with pytest.raises(ValueError, match="out of range"):
        tok.token_bytes(tok.vocab_size)


def test_random_text_round_trips(tok: BPETokenizer) -> None:
    rng = random.Random(7)
    alphabet = "ab lhe\n\t xyzé😀<|im_end|><tool>" + "".join(map(chr, range(0x3000, 0x3010)))
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        for parse_special in (True, False):
            assert tok.decode(tok.encode(text, parse_special=parse_special)) == text


def test_load_tokenizer_dispatches_on_model_and_names_what_is_missing() -> None:
    assert isinstance(load_tokenizer(tiny_metadata()), Tokenizer)
    with pytest.raises(UnsupportedTokenizer, match=r"'rwkv'.*supports: gpt2, llama"):
        load_tokenizer(tiny_metadata(**{"tokenizer.ggml.model": "rwkv"}))
    with pytest.raises(TokenizerError, match=r"tokenizer\.ggml\.model is missing"):
        load_tokenizer({})
    with pytest.raises(UnsupportedTokenizer, match=r"'nope'.*smollm"):
        load_tokenizer(tiny_metadata(**{"tokenizer.ggml.pre": "nope"}))
    meta = tiny_metadata()
    del meta["tokenizer.ggml.merges"]
    with pytest.raises(TokenizerError, match=r"tokenizer\.ggml\.merges"):
        load_tokenizer(meta)


def test_reads_a_real_gguf_file(tmp_path: Path) -> None:
    path = tmp_path / "vocab.gguf"
    meta = tiny_metadata(**{"tokenizer.ggml.add_bos_token": True})
    writer = GGUFWriter(str(path), arch="llama")
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(meta["tokenizer.ggml.tokens"])
    writer.add_token_types(meta["tokenizer.ggml.token_type"].tolist())
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(meta["tokenizer.ggml.bos_token_id"])
    writer.add_eos_token_id(meta["tokenizer.ggml.eos_token_id"])
    writer.add_add_bos_token(True)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with GGUFFile.open(path) as f:
        tok = load_tokenizer(f.metadata)
        assert tok.encode(" the") == [tok.bos_id, tid(tok, "Ġthe")]
        assert tok.eog_ids == BPETokenizer.from_gguf(meta).eog_ids


# -- pre-tokenizers -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "text", "words"),
    [
        (pt.GPT2, "Hello  world\n\n  x", ["Hello", " ", " world", "\n\n ", " x"]),
        (pt.GPT2, "it's 42 ok!! ", ["it", "'s", " 42", " ok", "!!", " "]),
        (pt.LLAMA3, "12345 abc\n\n", ["123", "45", " abc", "\n\n"]),
        (pt.LLAMA3, "I'M ok?\n x", ["I", "'M", " ok", "?\n", " x"]),
        (pt.QWEN2, "1234", ["1", "2", "3", "4"]),
        (pt.STARCODER, "a1b 22", ["a", "1", "b", " ", "2", "2"]),
        # U+3000 is whitespace: llama.cpp's regexes see it as U+000B, never in [\u3000-\u3002]
        (pt.DEEPSEEK_LLM, "\u3000\u3000。", ["\u3000", "\u3000", "。"]),
    ],
)
def test_pre_tokenizer_splits(family: pt.PreTokenizer, text: str, words: list[str]) -> None:
    assert family.split(text) == words


def test_every_pre_tokenizer_keeps_all_text() -> None:
    text = "Hi, I'm 12345 \t\n\n  x!? 我想😀 café\u00a0\u3000Ünï ½ <s>"
    for name, family in pt.PRE_TOKENIZERS.items():
        words = family.split(text)
        assert "".join(words) == text, name
        assert all(words), name
    assert pt.pre_tokenizer(None) is pt.DEFAULT


# -- llama.cpp's own test vectors (slow: fetches the llama-cpp-python sdist) ------------

BPE_VOCABS = [
    "gpt-2", "llama-bpe", "qwen2", "qwen35", "deepseek-llm", "deepseek-coder",
    "falcon", "starcoder", "refact", "command-r", "mpt",
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("name", BPE_VOCABS)
def test_llama_cpp_vocab_vectors(name: str) -> None:
    path = assets.vocab_file(name)
    with GGUFFile.open(path) as f:
        tok = load_tokenizer(f.metadata)
    for text, expected in assets.vocab_vectors(path):
        assert tok.encode(text, add_special=False, parse_special=False) == expected, text
        assert tok.decode(expected) == text


@pytest.mark.slow
def test_every_bpe_vocab_with_vectors_is_covered(vocab_dir: Path) -> None:
    for inp in vocab_dir.glob("ggml-vocab-*.gguf.inp"):
        with GGUFFile.open(inp.with_suffix("")) as f:
            model = f.metadata["tokenizer.ggml.model"]
        name = inp.name.removeprefix("ggml-vocab-").removesuffix(".gguf.inp")
        assert model != "gpt2" or name in BPE_VOCABS, name


# -- SmolLM2's vocabulary against llama.cpp (tests/data/make_tokenizer_refs.py) ---------


@pytest.fixture(scope="module")
def smollm2_refs(smollm2_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    refs = json.loads(REFS.read_text(encoding="utf-8"))
    assert refs["model"]["sha256"] == assets.SMOLLM2_SHA256, "rerun make_tokenizer_refs.py"
    with GGUFFile.open(smollm2_path) as f:  # copies: arrays are views of the mmap
        metadata = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in f.metadata.items()}
    return refs, metadata


@pytest.mark.slow
def test_smollm2_matches_llama_cpp(smollm2_refs: tuple[dict[str, Any], dict[str, Any]]) -> None:
    refs, metadata = smollm2_refs
    tok = BPETokenizer.from_gguf(metadata)
    assert not tok.add_bos and tok.eos_id == tid(tok, "<|im_end|>")
    # llama.cpp's load log: "EOG token = 0 '<|endoftext|>'", "= 2 '<|im_end|>'", "= 4 '<reponame>'"
    # (<reponame> is found as the FIM repo token)
    assert tok.eog_ids == {0, 2, 4}
    for case in refs["smollm"]:
        flags = (case["add_special"], case["parse_special"])
        for text, expected in zip(refs["texts"], case["ids"], strict=True):
            assert tok.encode(text, *flags) == expected, (flags, text)
    for ids, text in zip(refs["smollm"][0]["ids"], refs["detokenized"], strict=True):
        assert tok.decode(ids) == text


@pytest.mark.slow
def test_every_pre_tokenizer_family_matches_llama_cpp(
    smollm2_refs: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    refs, metadata = smollm2_refs
    assert len(refs["pre_variants"]) >= 20
    for pre, rows in refs["pre_variants"].items():
        tok = BPETokenizer.from_gguf({**metadata, "tokenizer.ggml.pre": pre})
        for text, expected in zip(refs["texts"], rows, strict=True):
            assert tok.encode(text) == expected, (pre, text)


@pytest.mark.slow
def test_smollm2_round_trips_gpl3(smollm2_refs: tuple[dict[str, Any], dict[str, Any]]) -> None:
    tok = BPETokenizer.from_gguf(smollm2_refs[1])
    text = assets.gpl3_text()
    ids = tok.encode(text)
    assert len(text) / len(ids) > 3.5  # real merges happen: about 4.6 characters per token
    assert tok.decode(ids) == text
    # how the daemon refuses or cuts a huge prompt without encoding all of it
    for piece in (text, text[:5000], "=" * 10_000, " " * 3000, "<|im_start|>" * 50):
        assert tok.fewest_tokens(piece) <= len(tok.encode(piece, add_special=False))
    assert tok.encode(tok.prefix_with_tokens(text, 256))[:256] == ids[:256]
