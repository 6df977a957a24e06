"""SentencePiece-style tokenizer (`tokenizer.ggml.model == "llama"`), id for id as llama.cpp.

Llama 1/2, Mistral, Phi-3 and Gemma 1-3 vocabularies. Encoding follows llama.cpp's
llama_vocab::impl::tokenize for SPM vocabularies:
1. special tokens are cut out first (specials.py); Gemma's runs of newlines, spaces
   and tabs are USER_DEFINED tokens, so they are cut out even with
   `parse_special=False`;
2. with `add_space_prefix` (the default; Gemma's GGUFs turn it off) a space is put
   before the first text fragment and before every fragment that follows a special
   token; then every space becomes U+2581 ("▁");
3. each fragment is split into UTF-8 characters and adjacent symbols are merged
   while their concatenation is a vocabulary entry, highest score first, leftmost
   first on ties (`llm_tokenizer_spm_session`); a final symbol that is not a token
   falls back to its bytes' `<0xXX>` tokens;
4. BOS (on by default) and EOS are added when `add_special` and the GGUF says so.

Speed: a merge can only join two characters that sit next to each other in some
token, so a fragment is cut before every "▁" that follows a character no token has
right before a "▁": the pieces (about one word each) merge independently to the
same result as the whole fragment, and are cached.

Decoding is llama_detokenize with remove_special=False: NORMAL tokens render with
"▁" as a space, and with `add_space_prefix` one leading space of the first token is
dropped, so `decode(encode(text, add_special=False))` gives `text` back.
`token_bytes` (what the engine streams) never drops it.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from corral.runtime.tokenizer.pretokenize import TokenizerError
from corral.runtime.tokenizer.vocab import (
    StripRules,
    Vocabulary,
    optional_flag,
    special_ids_from_gguf,
)

SPACE = "\u2581"  # "▁", SentencePiece's escaped space
_ESCAPE = str.maketrans(" ", SPACE)
_WORD_CACHE_LIMIT = 1 << 17
_CACHED_WORD_LEN = 64  # longer pieces (unspaced scripts, long runs) are not cached
_DEFAULT_IDS = {"bos": 1, "eos": 2, "unk": 0}  # llama.cpp's SPM defaults


class SPMTokenizer(Vocabulary):
    """SentencePiece BPE by token score, with `<0xXX>` byte fallback."""

    def __init__(
        self,
        tokens: Sequence[str],
        scores: Sequence[float] | None = None,
        token_types: Sequence[int] | np.ndarray | None = None,
        *,
        special_ids: Mapping[str, int] | None = None,
        add_bos: bool = True,
        add_eos: bool = False,
        add_space_prefix: bool = True,
        strip: StripRules | None = None,
    ) -> None:
        """`scores` default to 0 (then merges go left to right); `special_ids` maps
        roles (bos, eos, unk, eot, pad, ...) to ids over llama.cpp's defaults 1, 2, 0."""
        super().__init__(
            tokens,
            token_types,
            special_ids=special_ids,
            default_ids=_DEFAULT_IDS,
            add_bos=add_bos,
            add_eos=add_eos,
            strip=strip,
        )
        n = len(self._tokens)
        self._scores = [0.0] * n if scores is None else _float_list(scores, n)
        self.add_space_prefix = add_space_prefix
        self._byte_ids = [self._byte_token(b) for b in range(256)]
        self._cut = _word_splitter(self._tokens)
        self._word_cache: dict[str, tuple[int, ...]] = {}

    @classmethod
    def from_gguf(cls, metadata: Mapping[str, Any]) -> SPMTokenizer:
        """Build from a GGUF metadata mapping (e.g. `GGUFFile.metadata`)."""
        if "tokenizer.ggml.tokens" not in metadata:
            raise TokenizerError(
                "GGUF has no tokenizer.ggml.tokens; the file's vocabulary is incomplete"
            )
        add_bos = optional_flag(metadata, "tokenizer.ggml.add_bos_token")
        add_space = optional_flag(metadata, "tokenizer.ggml.add_space_prefix")
        return cls(
            metadata["tokenizer.ggml.tokens"],
            metadata.get("tokenizer.ggml.scores"),
            metadata.get("tokenizer.ggml.token_type"),
            special_ids=special_ids_from_gguf(metadata),
            add_bos=True if add_bos is None else add_bos,
            add_eos=bool(metadata.get("tokenizer.ggml.add_eos_token", False)),
            add_space_prefix=True if add_space is None else add_space,
            strip=StripRules.from_gguf(metadata),
        )

    def _byte_token(self, byte: int) -> int | None:
        """llama.cpp's byte_to_token: `<0xXX>`, else the byte itself as a token."""
        tid = self._ids.get(f"<0x{byte:02X}>")
        if tid is None and 0 < byte < 0x80:
            tid = self._ids.get(chr(byte))
        return tid

    # -- encoding ------------------------------------------------------------------

    def _encode_text(self, text: str, after_special: bool, out: list[int]) -> None:
        if self.add_space_prefix and after_special:
            text = " " + text
        cache = self._word_cache
        for word in self._cut(text.translate(_ESCAPE)):
            ids = cache.get(word)
            if ids is None:
                ids = self._encode_word(word)
                if len(word) <= _CACHED_WORD_LEN:
                    if len(cache) >= _WORD_CACHE_LIMIT:
                        cache.clear()
                    cache[word] = ids
            out.extend(ids)

    def _encode_word(self, word: str) -> tuple[int, ...]:
        ids = self._ids
        out: list[int] = []
        for sym in _merge(word, ids, self._scores):
            tid = ids.get(sym)
            if tid is not None:
                out.append(tid)
            else:
                out.extend(self._fallback(b) for b in sym.encode("utf-8", "surrogatepass"))
        return tuple(out)

    def _fallback(self, byte: int) -> int:
        tid = self._byte_ids[byte]
        if tid is None:  # llama.cpp throws here; the unknown token is the gentler answer
            tid = self.unk_id
            if tid is None:
                raise TokenizerError(
                    f"SentencePiece vocabulary has no token for byte 0x{byte:02X} "
                    "and no unknown token; the GGUF's vocabulary is incomplete"
                )
        return tid

    # -- decoding ------------------------------------------------------------------

    def _render_normal(self, text: str) -> bytes:
        return text.replace(SPACE, " ").encode("utf-8")

    def decode(self, ids: Iterable[int], special: bool = True) -> str:
        """Text of `ids` as llama_detokenize; invalid UTF-8 becomes U+FFFD."""
        pieces = [self.token_bytes(i, special) for i in ids]
        if self.add_space_prefix and pieces and pieces[0].startswith(b" "):
            pieces[0] = pieces[0][1:]
        return b"".join(pieces).decode("utf-8", errors="replace")


def _float_list(scores: Sequence[float], n: int) -> list[float]:
    values = np.asarray(scores, dtype=np.float32)
    if values.ndim != 1 or len(values) < n:
        raise TokenizerError(
            f"GGUF tokenizer has {values.size} scores for {n} tokens (tokenizer.ggml.scores)"
        )
    return values[:n].tolist()


def _word_splitter(tokens: Sequence[str]) -> Callable[[str], list[str]]:
    """`split(text)` into pieces no merge can cross: cuts before each "▁" whose left
    neighbour never precedes a "▁" inside a token."""
    before: set[str] = set()
    for token in tokens:
        at = token.find(SPACE, 1)
        while at > 0:
            before.add(token[at - 1])
            at = token.find(SPACE, at + 1)
    guard = f"(?<![{re.escape(''.join(sorted(before)))}])" if before else ""
    cut = re.compile(f"{guard}(?={SPACE})")

    def split(text: str) -> list[str]:
        return [w for w in cut.split(text) if w]

    return split


def _merge(word: str, ids: Mapping[str, int], scores: Sequence[float]) -> list[str]:
    """llm_tokenizer_spm_session: merge adjacent symbols while the pair is a token,
    highest score first, leftmost first on ties."""
    n = len(word)
    if n < 2:
        return [word]
    syms = list(word)
    prev = list(range(-1, n - 1))
    nxt = [*range(1, n), -1]
    heap = [
        (-scores[tid], i, pair)
        for i in range(n - 1)
        if (tid := ids.get(pair := word[i : i + 2])) is not None
    ]
    heapq.heapify(heap)
    push = heapq.heappush
    while heap:
        _, left, text = heapq.heappop(heap)
        right = nxt[left]
        if right < 0 or not syms[left] or syms[left] + syms[right] != text:
            continue  # stale: one side changed since this pair was queued
        syms[left], syms[right] = text, ""
        after = nxt[right]
        nxt[left] = after
        if after >= 0:
            prev[after] = left
        if (before := prev[left]) >= 0:
            pair = syms[before] + text
            if (tid := ids.get(pair)) is not None:
                push(heap, (-scores[tid], before, pair))
        if after >= 0:
            pair = text + syms[after]
            if (tid := ids.get(pair)) is not None:
                push(heap, (-scores[tid], left, pair))
    return [s for s in syms if s]
