"""A SentencePiece `tokenizer.model` (protobuf ModelProto) written from GGUF vocab arrays.

Field numbers from sentencepiece_model.proto: ModelProto.pieces = 1, .trainer_spec = 2,
.normalizer_spec = 3; SentencePiece.piece = 1, .score = 2 (float), .type = 3 (enum);
TrainerSpec.model_type = 3 (UNIGRAM = 1, BPE = 2), .byte_fallback = 35;
NormalizerSpec.add_dummy_prefix = 3. (Checked once against the sentencepiece library: it
loads these files and reports the same pieces, scores and types.)
"""

from __future__ import annotations

import struct
from collections.abc import Sequence


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, wire: int, payload: bytes) -> bytes:
    return _varint(number << 3 | wire) + payload


def _len(number: int, data: bytes) -> bytes:
    return _field(number, 2, _varint(len(data)) + data)


def spm_model(
    pieces: Sequence[str], scores: Sequence[float], types: Sequence[int], model_type: int = 1
) -> bytes:
    """The serialized ModelProto; `types` are GGUF token types (the same numbers as
    SentencePiece's piece types)."""
    out = bytearray()
    for piece, score, kind in zip(pieces, scores, types, strict=True):
        body = _len(1, piece.encode("utf-8")) + _field(2, 5, struct.pack("<f", score))
        if kind != 1:  # NORMAL is the default and not written
            body += _field(3, 0, _varint(int(kind)))
        out += _len(1, body)
    trainer = _field(3, 0, _varint(model_type))
    if 6 in types:  # BYTE pieces need TrainerSpec.byte_fallback (35) set
        trainer += _field(35, 0, _varint(1))
    out += _len(2, trainer)
    out += _len(3, _field(3, 0, _varint(1)))
    return bytes(out)
