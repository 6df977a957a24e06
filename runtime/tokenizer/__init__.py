"""Tokenizers built from GGUF metadata, producing the same token ids as llama.cpp.

`load_tokenizer(metadata)` picks the implementation from `tokenizer.ggml.model`
through `TOKENIZER_MODELS`: "gpt2" (byte-level BPE, bpe.py) and "llama"
(SentencePiece, spm.py), both built on the shared `Vocabulary` (vocab.py); a new
model type is one more entry there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

from corral.runtime.tokenizer.bpe import BPETokenizer
from corral.runtime.tokenizer.pretokenize import (
    PRE_TOKENIZERS,
    PreTokenizer,
    TokenizerError,
    UnsupportedTokenizer,
)
from corral.runtime.tokenizer.spm import SPMTokenizer
from corral.runtime.tokenizer.vocab import TokenType, Vocabulary

__all__ = [
    "PRE_TOKENIZERS",
    "TOKENIZER_MODELS",
    "BPETokenizer",
    "PreTokenizer",
    "SPMTokenizer",
    "TokenType",
    "Tokenizer",
    "TokenizerError",
    "UnsupportedTokenizer",
    "Vocabulary",
    "load_tokenizer",
]


@runtime_checkable
class Tokenizer(Protocol):
    """What the engine needs from a tokenizer."""

    add_bos: bool
    add_eos: bool

    @property
    def vocab_size(self) -> int: ...
    @property
    def bos_id(self) -> int | None: ...
    @property
    def eos_id(self) -> int | None: ...
    @property
    def eog_ids(self) -> frozenset[int]: ...

    def encode(
        self, text: str, add_special: bool = True, parse_special: bool = True
    ) -> list[int]: ...
    def fewest_tokens(self, text: str) -> int: ...
    def prefix_with_tokens(self, text: str, n: int) -> str: ...
    def suffix_with_tokens(self, text: str, n: int) -> str: ...
    def decode(self, ids: Iterable[int], special: bool = True) -> str: ...
    def token_bytes(self, token_id: int, special: bool = True) -> bytes: ...
    def is_control(self, token_id: int) -> bool: ...
    def is_eog(self, token_id: int) -> bool: ...
    def special_id(self, role: str) -> int | None: ...


# `tokenizer.ggml.model` value -> constructor from GGUF metadata.
TOKENIZER_MODELS: dict[str, Callable[[Mapping[str, Any]], Tokenizer]] = {
    "gpt2": BPETokenizer.from_gguf,
    "llama": SPMTokenizer.from_gguf,
}


def load_tokenizer(metadata: Mapping[str, Any]) -> Tokenizer:
    """The tokenizer a GGUF file describes; `UnsupportedTokenizer` names what is missing."""
    model = metadata.get("tokenizer.ggml.model")
    supported = ", ".join(sorted(TOKENIZER_MODELS))
    if model is None:
        raise TokenizerError(
            f"GGUF has no tokenizer (tokenizer.ggml.model is missing); corral supports: {supported}"
        )
    try:
        build = TOKENIZER_MODELS[model]
    except KeyError:
        raise UnsupportedTokenizer(
            f"unsupported tokenizer model {model!r} (tokenizer.ggml.model); "
            f"corral supports: {supported}"
        ) from None
    return build(metadata)
