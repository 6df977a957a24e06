"""What every tokenizer model shares: the vocabulary, its special tokens and decoding.

`Vocabulary` mirrors the model-independent half of llama.cpp's llama_vocab::impl:
- token types from `tokenizer.ggml.token_type`; empty tokens become `[EMPTY_<id>]`;
  a text listed twice maps to its last id;
- special ids (`tokenizer.ggml.<role>_token_id` over the model's defaults, then
  detection by token text), end-of-generation ids and the type overrides llama.cpp
  applies on load; where it picks one of several candidates in hash-map order (FIM
  and EOT detection by text), the lowest id is taken here;
- special-token partitioning (specials.py) with the LSTRIP/RSTRIP flags llama.cpp
  sets by model name;
- `encode`: BOS, the fragments between special tokens handed to the model's
  `_encode_text`, EOS;
- `token_bytes` as `token_to_piece`: CONTROL and UNKNOWN tokens render as their text
  when `special=True` and as nothing otherwise; USER_DEFINED tokens always render;
  BYTE tokens `<0xXX>` render as that byte; NORMAL ones through the model's
  `_render_normal`; UNUSED and UNDEFINED tokens render as nothing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np

from corral.runtime.tokenizer.pretokenize import TokenizerError
from corral.runtime.tokenizer.specials import Special, SpecialSplitter

log = logging.getLogger(__name__)
_WHITESPACE = re.compile(r"\s+")  # what LSTRIP/RSTRIP special tokens may swallow


class TokenType(IntEnum):
    """`tokenizer.ggml.token_type` values."""

    UNDEFINED = 0
    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6


SPECIAL_TYPES = frozenset({TokenType.CONTROL, TokenType.UNKNOWN, TokenType.USER_DEFINED})
HIDDEN_UNLESS_SPECIAL = frozenset({TokenType.CONTROL, TokenType.UNKNOWN})

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
_ROLE_KEYS = {"bos": "bos", "eos": "eos", "unk": "unknown", "pad": "padding"} | {
    r: r for r in _ROLE_TEXTS
}
_EOG_ROLES = ("fim_pad", "fim_rep", "fim_sep", "eos", "eot", "eom")
_EOG_TEXTS = frozenset(
    ("<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
     "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
     "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
     "<｜end▁of▁sentence｜>", "[e~[")
)  # fmt: skip
_ALWAYS_RENDERED = ("<|channel|>", "<|message|>", "<|start|>", "<|constrain|>")  # gpt-oss


def special_ids_from_gguf(metadata: Mapping[str, Any]) -> dict[str, int]:
    """Role -> id for every `tokenizer.ggml.<role>_token_id` key present."""
    keys = {role: f"tokenizer.ggml.{stem}_token_id" for role, stem in _ROLE_KEYS.items()}
    return {role: int(metadata[key]) for role, key in keys.items() if key in metadata}


FIM_ROLES = ("fim_pre", "fim_suf", "fim_mid")  # fill-in-the-middle: prefix, suffix, middle


def has_fill_in_middle(metadata: Mapping[str, Any]) -> bool:
    """True when the vocabulary has all three FIM tokens, by GGUF key or (as llama.cpp
    finds them) by token text: the model can fill in between a prefix and a suffix."""
    given = special_ids_from_gguf(metadata)
    if all(role in given for role in FIM_ROLES):
        return True
    tokens = set(metadata.get("tokenizer.ggml.tokens") or ())
    return all(role in given or any(t in tokens for t in _ROLE_TEXTS[role]) for role in FIM_ROLES)


def optional_flag(metadata: Mapping[str, Any], key: str) -> bool | None:
    value = metadata.get(key)
    return None if value is None else bool(value)


@dataclass(frozen=True)
class StripRules:
    """The LSTRIP/RSTRIP token attributes llama.cpp sets by model name on load."""

    lstrip: frozenset[str] = frozenset()
    rstrip: frozenset[str] = frozenset()
    rstrip_specials: bool = False  # every special token, except those in `keep`
    keep: frozenset[str] = frozenset()

    @classmethod
    def from_gguf(cls, metadata: Mapping[str, Any]) -> StripRules:
        name = str(metadata.get("general.name", "")).lower()
        arch = str(metadata.get("general.architecture", ""))
        pre = str(metadata.get("tokenizer.ggml.pre", ""))
        if any(p in pre for p in ("jina-v2-de", "jina-v2-es", "jina-v2-code")) or any(
            a in arch for a in ("nomic-bert-moe", "jina-bert-v3")
        ):
            return cls(lstrip=frozenset({"<mask>"}))
        if "phi-3" in name or "phi3" in name:
            keep = frozenset({"<unk>", "<s>", "<|endoftext|>"})
            return cls(rstrip=frozenset({"</s>"}), rstrip_specials=True, keep=keep)
        if "modern-bert" in name:
            return cls(lstrip=frozenset({"[MASK]"}))
        return cls()

    def flags(self, text: str) -> tuple[bool, bool]:
        rstrip = text in self.rstrip or (self.rstrip_specials and text not in self.keep)
        return text in self.lstrip, rstrip


def _token_texts(tokens: Sequence[str]) -> list[str]:
    """The token list with empty entries named `[EMPTY_<id>]`, as llama.cpp does."""
    texts = list(tokens)
    if not all(texts):
        texts = [t or f"[EMPTY_{i}]" for i, t in enumerate(texts)]
    return texts


def _token_types(types: Sequence[int] | np.ndarray | None, n: int) -> np.ndarray:
    """Token types as an int array; values outside the enum become UNDEFINED."""
    if types is None:
        return np.full(n, int(TokenType.NORMAL), dtype=np.int64)
    values = np.asarray(types, dtype=np.int64)
    if values.shape != (n,):
        raise TokenizerError(f"GGUF tokenizer has {values.size} token types for {n} tokens")
    valid = (values >= TokenType.UNDEFINED) & (values <= TokenType.BYTE)
    return np.where(valid, values, int(TokenType.UNDEFINED))


class Vocabulary:
    """Shared base of the tokenizer models; subclasses provide `_encode_text` and
    `_render_normal` (and may override `decode`)."""

    add_bos: bool
    add_eos: bool

    def __init__(
        self,
        tokens: Sequence[str],
        token_types: Sequence[int] | np.ndarray | None,
        *,
        special_ids: Mapping[str, int] | None,
        default_ids: Mapping[str, int],
        add_bos: bool,
        add_eos: bool,
        strip: StripRules | None = None,
    ) -> None:
        if not len(tokens):
            raise TokenizerError("GGUF tokenizer has no tokens (tokenizer.ggml.tokens)")
        self._tokens = _token_texts(tokens)
        n = len(self._tokens)
        self._ids = dict(zip(self._tokens, range(n), strict=True))
        types = _token_types(token_types, n)
        specials = set(np.flatnonzero(np.isin(types, list(SPECIAL_TYPES))).tolist())
        self._types: list[int] = types.tolist()
        self._retyped: set[int] = set()  # ids whose type llama.cpp overrides on load
        defaults = {role: tid for role, tid in default_ids.items() if 0 <= tid < n}
        self._roles = self._resolve_roles(defaults, dict(special_ids or {}))
        self._eog = self._end_of_generation()
        self.add_bos, self.add_eos = add_bos, add_eos
        for flag, role in ((add_bos, "bos"), (add_eos, "eos")):
            if flag and self._roles.get(role) is None:
                raise TokenizerError(f"GGUF tokenizer asks to add a {role} token but has none")
        rules = strip or StripRules()
        self._strips = rules != StripRules()  # some special tokens swallow whitespace
        self._splitter = SpecialSplitter(
            Special(self._tokens[i], i, t == TokenType.USER_DEFINED, *rules.flags(self._tokens[i]))
            for i in sorted(specials | self._retyped)
            if (t := self._types[i]) in SPECIAL_TYPES
        )
        self._pieces: list[bytes | None] = [None] * n
        self._longest = max(map(len, self._tokens))  # characters of the longest entry

    # -- vocabulary ----------------------------------------------------------------

    def _resolve_roles(
        self, roles: dict[str, int | None], given: dict[str, int]
    ) -> dict[str, int | None]:
        """Special ids as llama.cpp settles them: GGUF keys (if in range) over the
        model's defaults, then detection by token text."""
        n = len(self._tokens)
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
        if self._types[tid] not in HIDDEN_UNLESS_SPECIAL:
            self._set_type(tid, TokenType.CONTROL)

    def _set_type(self, tid: int, kind: TokenType) -> None:
        self._types[tid] = kind
        self._retyped.add(tid)

    def _end_of_generation(self) -> frozenset[int]:
        eog = {tid for t in _EOG_TEXTS if (tid := self._ids.get(t)) is not None}
        for tid in eog:
            self._make_control(tid)
        eog |= {tid for r in _EOG_ROLES if (tid := self._roles.get(r)) is not None}
        for text in _ALWAYS_RENDERED:
            if (tid := self._ids.get(text)) is not None:
                self._set_type(tid, TokenType.USER_DEFINED)
        texts = {self._tokens[t] for t in eog}
        calls = {"<|call|>", "<|calls|>"} & texts
        if "<|end|>" in texts and calls and ({"<|return|>", "<|flush|>"} & texts):
            end = self._ids["<|end|>"]  # o200k_harmony / solar-open: <|end|> ends a message only
            eog.discard(end)
            self._set_type(end, TokenType.USER_DEFINED)
        if "</s>" in texts and ({"<|tool_response>", "<|plamo:eos|>"} & texts):
            eos = self._ids["</s>"]  # gemma4 / plamo: </s> is an ordinary token there
            eog.discard(eos)
            self._set_type(eos, TokenType.NORMAL)
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
    def unk_id(self) -> int | None:
        return self._roles.get("unk")

    @property
    def pad_id(self) -> int | None:
        return self._roles.get("pad")

    def special_id(self, role: str) -> int | None:
        """The id settled for a special role ("bos", "eos", "eot", "fim_pre", "fim_suf",
        "fim_mid", ...: GGUF key, else found by token text), or None if there is none."""
        return self._roles.get(role)

    @property
    def eog_ids(self) -> frozenset[int]:
        """Ids that end generation: EOS, EOT, EOM, FIM pad/repo/sep and known end texts."""
        return self._eog

    def is_eog(self, token_id: int) -> bool:
        return token_id in self._eog

    def is_control(self, token_id: int) -> bool:
        return self._types[self._check(token_id)] == TokenType.CONTROL

    def token_type(self, token_id: int) -> TokenType:
        """The token's type after llama.cpp's load-time overrides."""
        return TokenType(self._types[self._check(token_id)])

    def token_text(self, token_id: int) -> str:
        """The token as stored in the vocabulary."""
        return self._tokens[self._check(token_id)]

    def token_id(self, text: str) -> int | None:
        """The id of a vocabulary entry, e.g. `token_id("<|im_end|>")`."""
        return self._ids.get(text)

    def _check(self, token_id: int) -> int:
        if not 0 <= token_id < len(self._tokens):
            raise ValueError(f"token id {token_id} out of range (vocab size {len(self._tokens)})")
        return token_id

    # -- encoding ------------------------------------------------------------------

    def fewest_tokens(self, text: str) -> int:
        """A lower bound of `len(encode(text))`, without encoding: a token covers at most
        as many characters of the text as its entry has (one per byte or per ▁), so a
        50 MB prompt is known to be too long at once. Where special tokens swallow the
        whitespace beside them (LSTRIP/RSTRIP), whitespace is not counted."""
        if self._strips:
            text = _WHITESPACE.sub("", text)
        return -(-len(text) // self._longest)

    def prefix_with_tokens(self, text: str, n: int) -> str:
        """A prefix of `text` that encodes to at least `n` tokens if the whole does (for
        truncating a huge text without encoding all of it). Its first `n` tokens are the
        whole text's, unless one pre-tokenizer chunk spans the cut (a run of thousands of
        characters without a space). The whole text where whitespace may be swallowed."""
        return text if self._strips else text[: n * self._longest]

    def suffix_with_tokens(self, text: str, n: int) -> str:
        """The end of `text` that encodes to at least `n` tokens if the whole does: as
        `prefix_with_tokens`, from the other side."""
        return (
            text if self._strips or len(text) <= n * self._longest else text[-n * self._longest :]
        )

    def encode(self, text: str, add_special: bool = True, parse_special: bool = True) -> list[int]:
        """Token ids of `text`, as llama_tokenize(text, add_special, parse_special)."""
        out: list[int] = []
        if add_special and self.add_bos:
            out.append(self._roles["bos"])  # type: ignore[arg-type]
        after_special = True  # the text starts as if a special token preceded it
        for frag in self._splitter.split(text, parse_special) if text else ():
            if isinstance(frag, int):
                out.append(frag)
                after_special = True
            else:
                self._encode_text(frag, after_special, out)
                after_special = False
        if add_special and self.add_eos:
            out.append(self._roles["eos"])  # type: ignore[arg-type]
        return out

    def _encode_text(self, text: str, after_special: bool, out: list[int]) -> None:
        """Append the ids of one fragment of plain text (no special tokens in it)."""
        raise NotImplementedError

    # -- decoding ------------------------------------------------------------------

    def token_bytes(self, token_id: int, special: bool = True) -> bytes:
        """Raw bytes of one token (may be part of a UTF-8 character)."""
        if not special and self._types[self._check(token_id)] in HIDDEN_UNLESS_SPECIAL:
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
        if kind in SPECIAL_TYPES:
            return text.encode("utf-8")
        if kind == TokenType.NORMAL:
            return self._render_normal(text)
        if kind == TokenType.BYTE:
            return bytes([int(text[3:5], 16)])
        return b""

    def _render_normal(self, text: str) -> bytes:
        """Bytes of a NORMAL token's text."""
        raise NotImplementedError
