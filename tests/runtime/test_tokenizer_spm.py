"""SentencePiece tokenizer: a tiny hand-built vocabulary, llama.cpp's vectors, gemma-3."""

from __future__ import annotations

import hashlib
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
    SPMTokenizer,
    Tokenizer,
    TokenizerError,
    TokenType,
    load_tokenizer,
)
from corral.runtime.tokenizer.specials import Special, SpecialSplitter

REFS = Path(__file__).parents[1] / "data" / "gemma3_tokenize.json"
SP = "\u2581"  # "▁"

# -- a tiny vocabulary: unk/bos/eos, the 256 byte tokens, scored pieces, specials ------

HEAD = [("<unk>", TokenType.UNKNOWN), ("<s>", TokenType.CONTROL), ("</s>", TokenType.CONTROL)]
BYTES = [(f"<0x{b:02X}>", TokenType.BYTE) for b in range(256)]
PIECES = {  # text -> score; merges take the highest score first
    SP: -1.0, "a": -2.0, "b": -2.0, "c": -2.0, "h": -2.0, "e": -2.0, "l": -2.0, "o": -2.0,
    "x": -2.0, "y": -2.0, "ab": -5.0, "bc": -6.0, "aa": -7.0, "he": -8.0, "ll": -9.0,
    "llo": -10.0, "hello": -11.0, SP + "hello": -12.0, SP + "y": -13.0, "x" + SP + "y": -14.0,
    SP + SP: -15.0,
}  # fmt: skip
TAIL = [
    ("<tool>", TokenType.USER_DEFINED),
    ("<start_of_turn>", TokenType.CONTROL),
    ("<end_of_turn>", TokenType.NORMAL),  # mistyped in the file; llama.cpp makes it CONTROL
]


def tiny_metadata(**overrides: Any) -> dict[str, Any]:
    entries = HEAD + BYTES + [(t, TokenType.NORMAL) for t in PIECES] + TAIL
    scores = [0.0] * (len(HEAD) + len(BYTES)) + list(PIECES.values()) + [0.0] * len(TAIL)
    meta: dict[str, Any] = {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": [t for t, _ in entries],
        "tokenizer.ggml.scores": np.array(scores, np.float32),
        "tokenizer.ggml.token_type": np.array([k for _, k in entries], np.int32),
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.unknown_token_id": 0,
    }
    meta.update(overrides)
    return meta


def tiny(**overrides: Any) -> SPMTokenizer:
    return SPMTokenizer.from_gguf(tiny_metadata(**overrides))


@pytest.fixture
def tok() -> SPMTokenizer:
    return tiny()


def tid(tok: SPMTokenizer, text: str) -> int:
    found = tok.token_id(text)
    assert found is not None, text
    return found


def ids(tok: SPMTokenizer, *texts: str) -> list[int]:
    return [tid(tok, t) for t in texts]


def test_merges_take_the_highest_score_first(tok: SPMTokenizer) -> None:
    assert tok.encode("abc", add_special=False) == ids(tok, SP, "ab", "c")
    flipped = tiny(**{"tokenizer.ggml.scores": _scores_with(ab=-6.0, bc=-5.0)})
    assert flipped.encode("abc", add_special=False) == ids(tok, SP, "a", "bc")
    # ▁ h e l l o -> he, ll, llo, hello, ▁hello: each step only reaches the next token
    assert tok.encode("hello", add_special=False) == ids(tok, SP + "hello")


def _scores_with(**changes: float) -> np.ndarray:
    scores = tiny_metadata()["tokenizer.ggml.scores"].copy()
    for text, score in changes.items():
        scores[len(HEAD) + len(BYTES) + list(PIECES).index(text)] = score
    return scores


def test_equal_scores_merge_leftmost_first(tok: SPMTokenizer) -> None:
    no_prefix = tiny(**{"tokenizer.ggml.add_space_prefix": False})
    assert no_prefix.encode("aaa", add_special=False) == ids(tok, "aa", "a")
    assert no_prefix.encode("aaaa", add_special=False) == ids(tok, "aa", "aa")


def test_space_prefix_escaping_and_bos(tok: SPMTokenizer) -> None:
    assert tok.add_bos and tok.add_space_prefix
    assert tok.encode("hello") == [tok.bos_id, *ids(tok, SP + "hello")]
    # ▁▁y: ▁y (-13) beats ▁▁ (-15), and ▁▁y is no token
    assert tok.encode("hello  y", add_special=False) == ids(tok, SP + "hello", SP, SP + "y")
    assert tok.encode("") == [tok.bos_id] and tok.encode("", add_special=False) == []
    plain = tiny(**{"tokenizer.ggml.add_space_prefix": False, "tokenizer.ggml.add_bos_token": 0})
    assert plain.encode("hello") == ids(tok, "hello")
    both = tiny(**{"tokenizer.ggml.add_eos_token": True})
    assert both.encode("a") == [both.bos_id, *ids(tok, SP, "a"), both.eos_id]


def test_missing_pieces_fall_back_to_byte_tokens(tok: SPMTokenizer) -> None:
    assert tok.encode("é", add_special=False) == ids(tok, SP, "<0xC3>", "<0xA9>")
    assert tok.decode(tok.encode("é😀 q", add_special=False)) == "é😀 q"
    no_bytes = tiny_metadata()
    no_bytes["tokenizer.ggml.token_type"][3 : 3 + 256] = TokenType.UNUSED
    no_bytes["tokenizer.ggml.tokens"][3 : 3 + 256] = [f"byte{b}" for b in range(256)]
    unk = SPMTokenizer.from_gguf(no_bytes)  # llama.cpp throws; corral answers <unk>
    assert unk.encode("aé", add_special=False) == [*ids(tok, SP, "a"), 0, 0]


def test_pieces_never_merge_across_a_cut(tok: SPMTokenizer) -> None:
    # "x▁y" is a token, so the speed-up's cut before "▁" must not fall after an "x"
    assert tok.encode("x y", add_special=False) == ids(tok, SP, "x" + SP + "y")
    assert tok.encode("ax y", add_special=False) == ids(tok, SP, "a", "x" + SP + "y")


def naive_spm(tok: SPMTokenizer, text: str) -> list[int]:
    """The bigram algorithm spelled out: merge the adjacent pair whose concatenation is
    the best-scoring token (leftmost on ties) until none is left; bytes for the rest."""
    scores = tiny_metadata()["tokenizer.ggml.scores"]
    syms = list(text)
    while True:
        pairs = [
            (-scores[t], i)
            for i in range(len(syms) - 1)
            if (t := tok.token_id(syms[i] + syms[i + 1])) is not None
        ]
        if not pairs:
            break
        _, i = min(pairs)
        syms[i : i + 2] = [syms[i] + syms[i + 1]]
    out: list[int] = []
    for s in syms:
        t = tok.token_id(s)
        out.extend([t] if t is not None else [tid(tok, f"<0x{b:02X}>") for b in s.encode()])
    return out


def test_matches_the_plain_bigram_algorithm_on_random_text(tok: SPMTokenizer) -> None:
    rng = random.Random(11)
    alphabet = ["a", "b", "c", "h", "e", "l", "o", "x", "y", " ", " ", SP, "é", "\n", "😀"]
    for _ in range(400):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        expected = naive_spm(tok, (" " + text).replace(" ", SP)) if text else []
        got = tok.encode(text, add_special=False, parse_special=False)
        assert got == expected, text
        if SP not in text:  # a literal "▁" comes back as a space
            assert tok.decode(got) == text


def test_special_tokens_are_cut_out_and_followed_by_a_space_prefix(tok: SPMTokenizer) -> None:
    sot, eot, tool = ids(tok, "<start_of_turn>", "<end_of_turn>", "<tool>")
    got = tok.encode("<start_of_turn>hello<end_of_turn>", add_special=False)
    assert got == [sot, tid(tok, SP + "hello"), eot]
    raw = tok.encode("<start_of_turn>hello<tool>", add_special=False, parse_special=False)
    assert sot not in raw and raw[-2:] == [tid(tok, "hello"), tool]
    assert tok.decode(raw[:-1]) == "<start_of_turn>hello"


def test_phi3_style_rstrip_eats_whitespace_after_specials() -> None:
    text = "<start_of_turn>  hello"
    plain, phi3 = tiny(), tiny(**{"general.name": "Phi3"})
    sot = tid(plain, "<start_of_turn>")
    assert plain.encode(text, add_special=False) == [sot, *ids(plain, SP + SP, SP + "hello")]
    assert phi3.encode(text, add_special=False) == [sot, tid(plain, SP + "hello")]


def test_special_ids_and_end_of_generation(tok: SPMTokenizer) -> None:
    eot = tid(tok, "<end_of_turn>")
    assert (tok.bos_id, tok.eos_id, tok.unk_id) == (1, 2, 0)
    assert tok.eog_ids == frozenset({2, eot})
    assert tok.is_control(eot) and tok.is_eog(eot) and not tok.is_control(tid(tok, "<tool>"))
    meta = tiny_metadata()
    for key in ("bos", "eos", "unknown"):
        del meta[f"tokenizer.ggml.{key}_token_id"]
    assert (SPMTokenizer.from_gguf(meta).bos_id, SPMTokenizer.from_gguf(meta).eos_id) == (1, 2)


def test_decode_drops_one_leading_space_like_llama_detokenize(tok: SPMTokenizer) -> None:
    hello = tok.encode("  hello", add_special=False)
    assert tok.decode(hello) == "  hello"
    assert b"".join(tok.token_bytes(i) for i in hello) == b"   hello"
    marked = tok.encode("<start_of_turn>hi<end_of_turn>")
    assert tok.decode(marked) == "<s><start_of_turn> hi<end_of_turn>"
    assert tok.decode(marked, special=False) == " hi"
    assert tok.token_bytes(tid(tok, "<0x41>")) == b"A"
    with pytest.raises(ValueError, match="out of range"):
        tok.token_bytes(tok.vocab_size)


def test_load_tokenizer_dispatches_llama_and_names_bad_metadata() -> None:
    assert isinstance(load_tokenizer(tiny_metadata()), SPMTokenizer)
    assert isinstance(load_tokenizer(tiny_metadata()), Tokenizer)
    meta = tiny_metadata()
    del meta["tokenizer.ggml.tokens"]
    with pytest.raises(TokenizerError, match=r"tokenizer\.ggml\.tokens"):
        load_tokenizer(meta)
    short = tiny_metadata(**{"tokenizer.ggml.scores": np.zeros(5, np.float32)})
    with pytest.raises(TokenizerError, match=r"5 scores for \d+ tokens"):
        load_tokenizer(short)
    one = {"tokenizer.ggml.tokens": ["a"], "tokenizer.ggml.scores": [0.0]}
    with pytest.raises(TokenizerError, match="add a bos token but has none"):
        SPMTokenizer.from_gguf(one)  # llama.cpp's default BOS id 1 is out of range


def test_reads_a_real_gguf_file(tmp_path: Path) -> None:
    meta = tiny_metadata()
    path = tmp_path / "spm.gguf"
    writer = GGUFWriter(str(path), arch="llama")
    writer.add_tokenizer_model("llama")
    writer.add_token_list(meta["tokenizer.ggml.tokens"])
    writer.add_token_scores(meta["tokenizer.ggml.scores"].tolist())
    writer.add_token_types(meta["tokenizer.ggml.token_type"].tolist())
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_space_prefix(False)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with GGUFFile.open(path) as f:
        tok = load_tokenizer(f.metadata)
    assert tok.encode("hello") == [1, tid(tiny(), "hello")]


# -- the special-token splitter (shared with BPE) against llama.cpp's plain loop --------


def naive_partition(specials: list[Special], text: str) -> list[str | int]:
    frags: list[str | int] = [text]
    for s in sorted(specials, key=lambda s: (-len(s.text), s.id)):
        new: list[str | int] = []
        for f in frags:
            if isinstance(f, int):
                new.append(f)
                continue
            parts = f.split(s.text)
            for k, part in enumerate(parts):
                if k:
                    new.append(s.id)
                new.extend([part] if part else [])
        frags = new
    return frags


def test_splitter_finds_overlapping_and_prefix_specials() -> None:
    texts = ["ab", "abc", "bcd", "c", "<u1>", "<u2>", "<u12>", "<u>", "b<"]
    specials = [Special(t, i, True) for i, t in enumerate(texts)]
    splitter = SpecialSplitter(specials)
    rng = random.Random(5)
    for _ in range(500):
        text = "".join(rng.choice("abcd<>u12") for _ in range(rng.randint(0, 25)))
        assert splitter.split(text, True) == naive_partition(specials, text), text
    long = SpecialSplitter([Special("z" * 1500, 7, True)])  # too deep for a trie regex
    assert long.split("a" + "z" * 1500 + "b", True) == ["a", 7, "b"]


# -- llama.cpp's own test vectors (slow: fetches the llama-cpp-python sdist) ------------

SPM_VOCABS = ["llama-spm", "phi-3"]


@pytest.mark.slow
@pytest.mark.parametrize("name", SPM_VOCABS)
def test_llama_cpp_vocab_vectors(name: str) -> None:
    path = assets.vocab_file(name)
    with GGUFFile.open(path) as f:
        tok = load_tokenizer(f.metadata)
    assert isinstance(tok, SPMTokenizer)
    for text, expected in assets.vocab_vectors(path):
        assert tok.encode(text, add_special=False, parse_special=False) == expected, text
        assert tok.decode(expected) == text


@pytest.mark.slow
def test_every_spm_vocab_is_covered(vocab_dir: Path) -> None:
    for path in vocab_dir.glob("ggml-vocab-*.gguf"):
        with GGUFFile.open(path) as f:
            if f.metadata["tokenizer.ggml.model"] != "llama":
                continue
            tok = load_tokenizer(f.metadata)
        name = path.name.removeprefix("ggml-vocab-").removesuffix(".gguf")
        has_vectors = path.with_name(path.name + ".inp").is_file()
        assert name in SPM_VOCABS or not has_vectors, name
        text = (
            "Hello wörld,\n  我想 😀 <s>"  # vocabularies without vectors (baichuan): a round trip
        )
        assert tok.decode(tok.encode(text, add_special=False, parse_special=False)) == text


# -- gemma-3-270m's 262k vocabulary against llama.cpp (make_gemma3_tokenize_refs.py) ----


@pytest.fixture(scope="module")
def gemma3() -> tuple[dict[str, Any], SPMTokenizer, SPMTokenizer]:
    """The references, gemma-3's tokenizer, and one with add_space_prefix flipped on."""
    refs = json.loads(REFS.read_text(encoding="utf-8"))
    assert refs["model"]["sha256"] == assets.GEMMA3_SHA256, "rerun make_gemma3_tokenize_refs.py"
    with GGUFFile.open(assets.gemma3_gguf()) as f:  # tokenizers copy what they keep
        tok = SPMTokenizer.from_gguf(f.metadata)
        spaced = SPMTokenizer.from_gguf({**f.metadata, "tokenizer.ggml.add_space_prefix": True})
    return refs, tok, spaced


@pytest.mark.slow
def test_gemma3_matches_llama_cpp(gemma3: tuple[dict[str, Any], SPMTokenizer, Any]) -> None:
    refs, tok, _ = gemma3
    assert (tok.bos_id, tok.eos_id, tok.add_bos, tok.add_space_prefix) == (2, 1, True, False)
    # llama.cpp: EOG <eos>, <end_of_turn> (found as EOT) and </s> (made CONTROL on load)
    assert tok.eog_ids == {1, 106, 212} and tok.token_text(106) == "<end_of_turn>"
    for case in refs["gemma3"]:
        flags = (case["add_special"], case["parse_special"])
        for text, expected in zip(refs["texts"], case["ids"], strict=True):
            assert tok.encode(text, *flags) == expected, (flags, text)
    for ids_, text in zip(refs["gemma3"][0]["ids"], refs["detokenized"], strict=True):
        assert tok.decode(ids_) == text


@pytest.mark.slow
def test_gemma3_space_prefix_variant_matches_llama_cpp(
    gemma3: tuple[dict[str, Any], SPMTokenizer, SPMTokenizer],
) -> None:
    refs, _, spaced = gemma3
    assert spaced.add_space_prefix
    for text, expected in zip(refs["texts"], refs["space_prefix"], strict=True):
        assert spaced.encode(text) == expected, text


@pytest.mark.slow
def test_gemma3_gpl3_text_matches_llama_cpp(gemma3: tuple[dict[str, Any], Any, Any]) -> None:
    refs, tok, _ = gemma3
    text = assets.gpl3_text()
    if hashlib.sha256(text.encode()).hexdigest() != refs["gpl3"]["sha256"]:
        pytest.skip("this machine's GPL-3 text differs from the one the references used")
    ids_ = tok.encode(text)
    assert ids_ == refs["gpl3"]["ids"]
    assert len(text) / len(ids_) > 4  # real merges: about 4.6 characters per token
    assert tok.decode(ids_[1:]) == text
    # how the daemon refuses or cuts a huge prompt without encoding all of it
    for piece in (text, "=" * 10_000, " " * 3000, "<start_of_turn>" * 50, "日本語" * 100):
        assert tok.fewest_tokens(piece) <= len(tok.encode(piece, add_special=False))
    assert tok.encode(tok.prefix_with_tokens(text, 256))[:256] == ids_[:256]


@pytest.mark.slow
def test_the_length_bound_holds_where_specials_swallow_whitespace() -> None:
    """Phi-3's special tokens strip the whitespace after them (llama.cpp's RSTRIP): a
    prompt of mostly such whitespace is a few tokens, and must not be refused as long."""
    with GGUFFile.open(assets.vocab_file("phi-3")) as f:
        tok = load_tokenizer(f.metadata)
    for text in ("<|user|>\n" + "\n" * 40000 + "Hi<|end|>\n<|assistant|>\n", "</s>" + " " * 2000):
        ids = tok.encode(text)
        assert tok.fewest_tokens(text) <= len(ids) < 10
        assert tok.encode(tok.prefix_with_tokens(text, 4))[:4] == ids[:4]
