"""A SentencePiece vocabulary from `tokenizer.model`, as llama.cpp's `_set_vocab_sentencepiece`.

`tokenizer.model` is a protobuf `ModelProto`; only a few fields matter and they
are read here with a minimal wire-format parser (no protobuf dependency):

    ModelProto      1: repeated SentencePiece pieces
    SentencePiece   1: string piece   2: float score   3: enum type (NORMAL=1 default)
    ModelProto      2: TrainerSpec    3: model_type (UNIGRAM=1, BPE=2)

Piece types map one to one onto GGUF token types. Then, as llama.cpp does,
`added_tokens.json` entries become USER_DEFINED (score -1000), and
`tokenizer_config.json`'s `added_tokens_decoder` entries CONTROL (special or
special-looking) or USER_DEFINED, score -1000; ids up to config.json's
`vocab_size` that nothing names are `[PAD<i>]`, UNUSED, score -10000.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from corral.registry.convert.vocab_bpe import CONTROL, NORMAL, UNUSED, USER_DEFINED, looks_special
from corral.registry.errors import CorruptModel

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


@dataclass(frozen=True)
class SpmVocab:
    tokens: list[str]
    scores: list[float]
    types: list[int]
    model_type: int  # TrainerSpec.model_type: 1 unigram, 2 BPE


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def fields(buf: bytes) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of a protobuf message; LEN values are bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _varint(buf, pos)
        elif wire == _I64:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == _I32:
            value, pos = buf[pos : pos + 4], pos + 4
        elif wire == _LEN:
            n, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + n], pos + n
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > len(buf):
            raise ValueError("truncated field")
        yield number, wire, value


def _piece(buf: bytes) -> tuple[str, float, int]:
    text, score, kind = "", 0.0, NORMAL
    for number, wire, value in fields(buf):
        if number == 1 and wire == _LEN:
            text = value.decode("utf-8")
        elif number == 2 and wire == _I32:
            score = struct.unpack("<f", value)[0]
        elif number == 3 and wire == _VARINT:
            kind = value
    return text, score, kind


def read_model(data: bytes, where: str) -> SpmVocab:
    """Pieces, scores and types of a serialized SentencePiece ModelProto."""
    tokens: list[str] = []
    scores: list[float] = []
    types: list[int] = []
    model_type = 1
    try:
        for number, wire, value in fields(data):
            if number == 1 and wire == _LEN:
                text, score, kind = _piece(value)
                tokens.append(text)
                scores.append(score)
                types.append(kind)
            elif number == 2 and wire == _LEN:
                for n, w, v in fields(value):
                    if n == 3 and w == _VARINT:
                        model_type = v
    except (ValueError, UnicodeDecodeError, struct.error) as e:
        raise CorruptModel(f"{where}: tokenizer.model is not a SentencePiece model ({e})") from None
    if not tokens:
        raise CorruptModel(f"{where}: tokenizer.model holds no pieces")
    return SpmVocab(tokens, scores, types, model_type)


def spm_vocab(
    data: bytes,
    vocab_size: int | None,
    added_tokens: Mapping[str, int],
    tokenizer_config: Mapping[str, Any],
    where: str,
) -> SpmVocab:
    """llama.cpp's `_create_vocab_sentencepiece` over the parsed model."""
    model = read_model(data, where)
    n = vocab_size or len(model.tokens)
    tokens = [f"[PAD{i}]" for i in range(n)]
    scores = [-10000.0] * n
    types = [UNUSED] * n
    for i in range(min(n, len(model.tokens))):
        tokens[i], scores[i], types[i] = model.tokens[i], model.scores[i], model.types[i]
    for text, i in added_tokens.items():
        if 0 <= int(i) < n:
            tokens[int(i)], scores[int(i)], types[int(i)] = text, -1000.0, USER_DEFINED
    decoder = tokenizer_config.get("added_tokens_decoder") or {}
    for key, entry in decoder.items():
        i, text = int(key), str(entry.get("content", ""))
        if not 0 <= i < n:
            continue
        special = bool(entry.get("special")) or looks_special(text)
        tokens[i] = text if special else text.replace("\u2581", " ")
        types[i] = CONTROL if special else USER_DEFINED
        scores[i] = -1000.0
    return SpmVocab(tokens, scores, types, model.model_type)
