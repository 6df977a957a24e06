"""GPT-2 style byte-level BPE (`tokenizer.ggml.model == "gpt2"`), id for id as llama.cpp.

Encoding follows llama.cpp's llama_vocab::impl::tokenize for BPE vocabularies:
1. special tokens are cut out first (`tokenizer_st_partition`): CONTROL, UNKNOWN
   and USER_DEFINED tokens, longest text first, every occurrence; with
   `parse_special=False` only USER_DEFINED ones are;
2. the pieces between them are pre-tokenized into words (pretokenize.py);
3. each word's UTF-8 bytes are mapped to GPT-2's printable characters and
   merged pair by pair, lowest merge rank first, leftmost first on ties
   (`llm_tokenizer_bpe_session`); families with `ignore_merges` take a word
   that is itself a token as is;
4. BOS/EOS are added when `add_special` and the GGUF's add_bos/add_eos say so.

Decoding follows `token_to_piece`: NORMAL tokens map back to their bytes;
CONTROL and UNKNOWN tokens render as their text when `special=True` (llama.cpp's
default in common_token_to_piece/common_detokenize) and as nothing when
`special=False` (what a chat stream wants); USER_DEFINED tokens always render as
their text; UNUSED and UNDEFINED tokens render as nothing. `decode` does not
apply llama.cpp's optional `clean_spaces` pass, so it always equals the
concatenation of `token_bytes`, which is what the engine streams.

End-of-generation ids and the per-token type overrides mirror llama.cpp's
llama_vocab::impl::load. Where llama.cpp picks one of several candidate tokens
in hash-map order (FIM and EOT detection by text), the lowest id is taken here.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Iterable, Mapping, Sequence
from enum import IntEnum
from typing import Any

from corral.runtime.tokenizer.pretokenize import PreTokenizer, TokenizerError, pre_tokenizer

log = logging.getLogger(__name__)

_WORD_CACHE_LIMIT = 1 << 17


class TokenType(IntEnum):
    """`tokenizer.ggml.token_type` values."""

    UNDEFINED = 0
    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6


_SPECIAL_TYPES = frozenset({TokenType.CONTROL, TokenType.UNKNOWN, TokenType.USER_DEFINED})
_HIDDEN_UNLESS_SPECIAL = frozenset({TokenType.CONTROL, TokenType.UNKNOWN})


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

# Roles llama.cpp also finds by token text when the GGUF has no
# `tokenizer.ggml.<role>_token_id`; a token found that way becomes CONTROL.
_ROLE_TEXTS: dict[str, tuple[str, ...]] = {
    "eot": ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
            "<|end_of_text|>", "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>",
            "<end_of_utterance>"),
    "eom": ("<|eom_id|>",),
    "fim_pre": ("<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>",
                "▁<PRE>", "<|code_prefix|>", "<|prefix|>"),
    "fim_suf": ("<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>",
                "▁<SUF>", "<|code_suffix|>", "<|suffix|>"),
    "fim_mid": ("<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>",
                "▁<MID>", "<|code_middle|>", "<|middle|>"),
    "fim_pad": ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"),
    "fim_rep": ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"),
    "fim_sep": ("<|file_sep|>",),
}  # fmt: skip
# role -> GGUF key stem: tokenizer.ggml.<stem>_token_id
_ROLE_KEYS = {"bos": "bos", "eos": "eos", "pad": "padding"} | {r: r for r in _ROLE_TEXTS}
_EOG_ROLES = ("fim_pad", "fim_rep", "fim_sep", "eos", "eot", "eom")
_EOG_TEXTS = frozenset(
    ("<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
     "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
     "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
     "<｜end▁of▁sentence｜>", "[e~[")
)  # fmt: skip
_ALWAYS_RENDERED = ("<|channel|>", "<|message|>", "<|start|>", "<|constrain|>")  # gpt-oss


class BPETokenizer:
    """Byte-level BPE tokenizer built from GGUF `tokenizer.ggml.*` metadata."""

    def __init__(
        self,
        tokens: Sequence[str],
        merges: Iterable[str],
        token_types: Sequence[int] | None = None,
        *,
        pre: str | None = None,
        special_ids: Mapping[str, int] | None = None,
        add_bos: bool | None = None,
        add_eos: bool = False,
    ) -> None:
        """`special_ids` maps roles (bos, eos, eot, eom, pad, fim_pad, ...) to ids;
        `add_bos=None` takes the pre-tokenizer family's default, as llama.cpp does."""
        if not tokens:
            raise TokenizerError("GGUF tokenizer has no tokens (tokenizer.ggml.tokens)")
        self._pre: PreTokenizer = pre_tokenizer(pre)
        self._tokens = [t or f"[EMPTY_{i}]" for i, t in enumerate(tokens)]
        self._ids = {t: i for i, t in enumerate(self._tokens)}
        types = [TokenType.NORMAL] * len(tokens) if token_types is None else token_types
        self._types = [t if 0 <= t <= 6 else TokenType.UNDEFINED for t in types]
        if len(self._types) != len(self._tokens):
            raise TokenizerError(
                f"GGUF tokenizer has {len(self._types)} token types for {len(tokens)} tokens"
            )
        self._ranks = _merge_ranks(merges)
        self._roles = self._resolve_roles(dict(special_ids or {}))
        self._eog = self._end_of_generation()
        self.add_bos = self._pre.add_bos if add_bos is None else add_bos
        self.add_eos = add_eos
        for flag, role in ((self.add_bos, "bos"), (self.add_eos, "eos")):
            if flag and self._roles.get(role) is None:
                raise TokenizerError(f"GGUF tokenizer asks to add a {role} token but has none")
        self._specials = sorted(
            ((self._tokens[i], i, t == TokenType.USER_DEFINED)
             for i, t in enumerate(self._types) if t in _SPECIAL_TYPES),
            key=lambda s: -len(s[0]),
        )  # fmt: skip
        self._word_cache: dict[str, tuple[int, ...]] = {}
        self._pieces: list[bytes | None] = [None] * len(self._tokens)

    @classmethod
    def from_gguf(cls, metadata: Mapping[str, Any]) -> BPETokenizer:
        """Build from a GGUF metadata mapping (e.g. `GGUFFile.metadata`)."""
        for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges"):
            if key not in metadata:
                raise TokenizerError(f"GGUF has no {key}; the file's vocabulary is incomplete")
        types = metadata.get("tokenizer.ggml.token_type")
        keys = {role: f"tokenizer.ggml.{stem}_token_id" for role, stem in _ROLE_KEYS.items()}
        special_ids = {role: int(metadata[key]) for role, key in keys.items() if key in metadata}
        add_bos = metadata.get("tokenizer.ggml.add_bos_token")
        return cls(
            metadata["tokenizer.ggml.tokens"],
            metadata["tokenizer.ggml.merges"],
            None if types is None else list(map(int, types)),
            pre=metadata.get("tokenizer.ggml.pre"),
            special_ids=special_ids,
            add_bos=None if add_bos is None else bool(add_bos),
            add_eos=bool(metadata.get("tokenizer.ggml.add_eos_token", False)),
        )

    # -- vocabulary ----------------------------------------------------------------

    def _resolve_roles(self, given: dict[str, int]) -> dict[str, int | None]:
        """Special ids as llama.cpp settles them: GGUF keys (if in range) over defaults
        (BOS = EOS = 11 for gpt2 vocabularies), then detection by token text."""
        n = len(self._tokens)
        roles: dict[str, int | None] = {"bos": 11, "eos": 11} if n > 11 else {}
        for role, tid in given.items():
            if 0 <= tid < n:
                roles[role] = tid
            else:
                log.warning("GGUF special token %s = %d out of vocab range, ignored", role, tid)
        for role, texts in _ROLE_TEXTS.items():
            if roles.get(role) is None:
                found = sorted(self._ids[t] for t in texts if t in self._ids)
                roles[role] = found[0] if found else None
                if found:
                    self._make_control(found[0])
        return roles

    def _make_control(self, tid: int) -> None:
        if self._types[tid] not in _HIDDEN_UNLESS_SPECIAL:
            self._types[tid] = TokenType.CONTROL

    def _end_of_generation(self) -> frozenset[int]:
        eog = {tid for t in _EOG_TEXTS if (tid := self._ids.get(t)) is not None}
        for tid in eog:
            self._make_control(tid)
        eog |= {tid for r in _EOG_ROLES if (tid := self._roles.get(r)) is not None}
        for text in _ALWAYS_RENDERED:
            if (tid := self._ids.get(text)) is not None:
                self._types[tid] = TokenType.USER_DEFINED
        texts = {self._tokens[t] for t in eog}
        calls = {"<|call|>", "<|calls|>"} & texts
        if "<|end|>" in texts and calls and ({"<|return|>", "<|flush|>"} & texts):
            end = self._ids["<|end|>"]  # o200k_harmony / solar-open: <|end|> ends a message only
            eog.discard(end)
            self._types[end] = TokenType.USER_DEFINED
        if "</s>" in texts and ({"<|tool_response>", "<|plamo:eos|>"} & texts):
            eos = self._ids["</s>"]  # gemma4 / plamo: </s> is an ordinary token there
            eog.discard(eos)
            self._types[eos] = TokenType.NORMAL
        return frozenset(eog)

    @property
    def vocab_size(self) -> int:
        return len(self._tokens)

    @property
    def bos_id(self) -> int | None:
        return self._roles.get("bos")

    @property
    def eos_id(self) -> int | None:
        return self._roles.get("eos")

    @property
    def pad_id(self) -> int | None:
        return self._roles.get("pad")

    @property
    def eog_ids(self) -> frozenset[int]:
        """Ids that end generation: EOS, EOT, EOM, FIM pad/repo/sep and known end texts."""
        return self._eog

    def is_eog(self, token_id: int) -> bool:
        return token_id in self._eog

    def is_control(self, token_id: int) -> bool:
        return self._types[self._check(token_id)] == TokenType.CONTROL

    def token_text(self, token_id: int) -> str:
        """The token as stored in the vocabulary (byte-level characters for NORMAL ones)."""
        return self._tokens[self._check(token_id)]

    def token_id(self, text: str) -> int | None:
        """The id of a vocabulary entry, e.g. `token_id("<|im_end|>")`."""
        return self._ids.get(text)

    def _check(self, token_id: int) -> int:
        if not 0 <= token_id < len(self._tokens):
            raise ValueError(f"token id {token_id} out of range (vocab size {len(self._tokens)})")
        return token_id

    # -- encoding ------------------------------------------------------------------

    def encode(self, text: str, add_special: bool = True, parse_special: bool = True) -> list[int]:
        """Token ids of `text`, as llama_tokenize(text, add_special, parse_special)."""
        out: list[int] = []
        if add_special and self.add_bos:
            out.append(self._roles["bos"])  # type: ignore[arg-type]
        for frag in self._partition(text, parse_special) if text else ():
            if isinstance(frag, int):
                out.append(frag)
                continue
            for word in self._pre.split(frag):
                ids = self._word_cache.get(word)
                if ids is None:
                    ids = self._encode_word(word)
                    if len(self._word_cache) >= _WORD_CACHE_LIMIT:
                        self._word_cache.clear()
                    self._word_cache[word] = ids
                out.extend(ids)
        if add_special and self.add_eos:
            out.append(self._roles["eos"])  # type: ignore[arg-type]
        return out

    def _partition(self, text: str, parse_special: bool) -> list[str | int]:
        """Cut special tokens out of `text`, longest first (tokenizer_st_partition)."""
        frags: list[str | int] = [text]
        for tok, tid, user_defined in self._specials:
            if not (parse_special or user_defined):
                continue
            if not any(isinstance(f, str) and tok in f for f in frags):
                continue
            new: list[str | int] = []
            for frag in frags:
                if isinstance(frag, int) or tok not in frag:
                    new.append(frag)
                    continue
                for k, part in enumerate(frag.split(tok)):
                    if k:
                        new.append(tid)
                    if part:
                        new.append(part)
            frags = new
        return frags

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

    # -- decoding ------------------------------------------------------------------

    def token_bytes(self, token_id: int, special: bool = True) -> bytes:
        """Raw bytes of one token (may be part of a UTF-8 character)."""
        if not special and self._types[self._check(token_id)] in _HIDDEN_UNLESS_SPECIAL:
            return b""
        piece = self._pieces[self._check(token_id)]
        if piece is None:
            piece = self._pieces[token_id] = self._render(token_id)
        return piece

    def decode(self, ids: Iterable[int], special: bool = True) -> str:
        """Text of `ids`; invalid UTF-8 (a split character) becomes U+FFFD."""
        data = b"".join(self.token_bytes(i, special) for i in ids)
        return data.decode("utf-8", errors="replace")

    def _render(self, token_id: int) -> bytes:
        text, kind = self._tokens[token_id], self._types[token_id]
        if kind in _SPECIAL_TYPES:
            return text.encode("utf-8")
        if kind == TokenType.NORMAL:
            return _unmap_bytes(text)
        if kind == TokenType.BYTE:
            return bytes([int(text[3:5], 16)])
        return b""


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
