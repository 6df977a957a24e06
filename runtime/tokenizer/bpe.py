"""GPT-2 style byte-level BPE (`tokenizer.ggml.model == "gpt2"`), id for id as llama.cpp.

Encoding follows llama.cpp's llama_vocab::impl::tokenize for BPE vocabularies:
1. special tokens are cut out first (specials.py, `tokenizer_st_partition`);
2. the pieces between them are pre-tokenized into words (pretokenize.py);
3. each word's UTF-8 bytes are mapped to GPT-2's printable characters and
   merged pair by pair, lowest merge rank first, leftmost first on ties
   (`llm_tokenizer_bpe_session`); families with `ignore_merges` take a word
   that is itself a token as is;
4. BOS/EOS are added when `add_special` and the GGUF's add_bos/add_eos say so.

Special ids, end-of-generation ids, token types and decoding are shared with the
other tokenizer models (vocab.py); NORMAL tokens decode by mapping GPT-2's
characters back to bytes. `decode` does not apply llama.cpp's optional
`clean_spaces` pass, so it always equals the concatenation of `token_bytes`, which
is what the engine streams.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from corral.runtime.tokenizer.pretokenize import PreTokenizer, TokenizerError, pre_tokenizer
from corral.runtime.tokenizer.vocab import (
    StripRules,
    TokenType,
    Vocabulary,
    optional_flag,
    special_ids_from_gguf,
)

__all__ = ["BPETokenizer", "TokenType"]

log = logging.getLogger(__name__)

_WORD_CACHE_LIMIT = 1 << 17


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte to a printable character (byte-level BPE alphabet)."""
    keep = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    mapping = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


_BYTE_TO_CHAR = _bytes_to_unicode()
_BYTE_ENCODE = str.maketrans({chr(b): c for b, c in _BYTE_TO_CHAR.items()})
_CHAR_TO_BYTE = {c: b for b, c in _BYTE_TO_CHAR.items()}


class BPETokenizer(Vocabulary):
    """Byte-level BPE tokenizer built from GGUF `tokenizer.ggml.*` metadata."""

    def __init__(
        self,
        tokens: Sequence[str],
        merges: Iterable[str],
        token_types: Sequence[int] | np.ndarray | None = None,
        *,
        pre: str | None = None,
        special_ids: Mapping[str, int] | None = None,
        add_bos: bool | None = None,
        add_eos: bool = False,
        strip: StripRules | None = None,
    ) -> None:
        """`special_ids` maps roles (bos, eos, eot, eom, pad, fim_pad, ...) to ids;
        `add_bos=None` takes the pre-tokenizer family's default, as llama.cpp does."""
        self._pre: PreTokenizer = pre_tokenizer(pre)
        n = len(tokens)
        super().__init__(
            tokens,
            token_types,
            special_ids=special_ids,
            default_ids={"bos": 11, "eos": 11},  # llama.cpp's gpt2 defaults
            add_bos=self._pre.add_bos if add_bos is None else add_bos,
            add_eos=add_eos,
            strip=strip,
        )
        self._ranks = _merge_ranks(merges)
        self._word_cache: dict[str, tuple[int, ...]] = {}
        log.debug("BPE vocabulary: %d tokens, %d merges", n, len(self._ranks))

    @classmethod
    def from_gguf(cls, metadata: Mapping[str, Any]) -> BPETokenizer:
        """Build from a GGUF metadata mapping (e.g. `GGUFFile.metadata`)."""
        for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges"):
            if key not in metadata:
                raise TokenizerError(f"GGUF has no {key}; the file's vocabulary is incomplete")
        return cls(
            metadata["tokenizer.ggml.tokens"],
            metadata["tokenizer.ggml.merges"],
            metadata.get("tokenizer.ggml.token_type"),
            pre=metadata.get("tokenizer.ggml.pre"),
            special_ids=special_ids_from_gguf(metadata),
            add_bos=optional_flag(metadata, "tokenizer.ggml.add_bos_token"),
            add_eos=bool(metadata.get("tokenizer.ggml.add_eos_token", False)),
            strip=StripRules.from_gguf(metadata),
        )

    def _encode_text(self, text: str, after_special: bool, out: list[int]) -> None:
        for word in self._pre.split(text):
            ids = self._word_cache.get(word)
            if ids is None:
                ids = self._encode_word(word)
                if len(self._word_cache) >= _WORD_CACHE_LIMIT:
                    self._word_cache.clear()
                self._word_cache[word] = ids
            out.extend(ids)

    def _encode_word(self, word: str) -> tuple[int, ...]:
        chars = word.encode("utf-8", "surrogatepass").decode("latin-1").translate(_BYTE_ENCODE)
        ids = self._ids
        if self._pre.ignore_merges and chars in ids:
            return (ids[chars],)
        out: list[int] = []
        for sym in _bpe_merge(chars, self._ranks):
            tid = ids.get(sym)
            if tid is not None:
                out.append(tid)
            else:  # llama.cpp falls back to single-byte tokens; only ASCII ones can exist
                out.extend(ids[c] for c in sym if c < "\x80" and c in ids)
        return tuple(out)

    def _render_normal(self, text: str) -> bytes:
        return _unmap_bytes(text)


def _merge_ranks(merges: Iterable[str]) -> dict[tuple[str, str], int]:
    """(left, right) -> rank; the first of duplicate merges wins, as in llama.cpp."""
    ranks: dict[tuple[str, str], int] = {}
    for rank, merge in enumerate(merges):
        cut = merge.find(" ", 1)
        pair = (merge[:cut], merge[cut + 1 :]) if cut >= 0 else ("", "")
        ranks.setdefault(pair, rank)
    return ranks


def _bpe_merge(word: str, ranks: Mapping[tuple[str, str], int]) -> list[str]:
    """Merge adjacent symbols, lowest rank first, leftmost first on ties."""
    if len(word) < 2:
        return [word]
    syms = list(word)
    n = len(syms)
    prev = list(range(-1, n - 1))
    nxt = [*range(1, n), -1]
    heap = [
        (rank, i, syms[i] + syms[i + 1])
        for i in range(n - 1)
        if (rank := ranks.get((syms[i], syms[i + 1]))) is not None
    ]
    heapq.heapify(heap)
    while heap:
        _, left, text = heapq.heappop(heap)
        right = nxt[left]
        if right < 0 or syms[left] + syms[right] != text or not syms[left]:
            continue  # stale: one side changed since this pair was queued
        syms[left], syms[right] = text, ""
        after = nxt[right]
        nxt[left] = after
        if after >= 0:
            prev[after] = left
        for a, b in ((prev[left], left), (left, after)):
            if a >= 0 and b >= 0 and (rank := ranks.get((syms[a], syms[b]))) is not None:
                heapq.heappush(heap, (rank, a, syms[a] + syms[b]))
    return [s for s in syms if s]


def _unmap_bytes(text: str) -> bytes:
    """Bytes of a byte-level token; characters outside the map render as llama.cpp does."""
    try:
        return bytes([_CHAR_TO_BYTE[c] for c in text])
    except KeyError:
        out = bytearray()
        for c in text:
            if c in _CHAR_TO_BYTE:
                out.append(_CHAR_TO_BYTE[c])
            else:
                out += b"[UNK_BYTE_0x" + c.encode().hex().encode() + text.encode() + b"]"
        return bytes(out)
