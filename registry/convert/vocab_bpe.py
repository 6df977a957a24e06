"""A byte-level BPE vocabulary from `tokenizer.json`, as llama.cpp's `_set_vocab_gpt2` builds it.

Tokens are the `model.vocab` strings plus `added_tokens`, padded with `[PAD<i>]`
(UNUSED) up to config.json's `vocab_size`; an added token is CONTROL when marked
special or when it looks special (`<|...|>`, ...), else USER_DEFINED; the rest are
NORMAL. Merges are copied (the newer `[a, b]` pair form is joined with a space,
spaces inside a part written as U+0120, as gguf-py does).

`tokenizer.ggml.pre` names the pre-tokenizer. llama.cpp's converter identifies it
by hashing how the HF tokenizer splits a test text, which needs the `tokenizers`
library; corral instead reads the pre-tokenizer's rules from tokenizer.json and
matches them against a table of the known ones (below). A pre-tokenizer that is
not in the table is refused with its rules named, never guessed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from corral.registry.errors import SourceError

# GGUF token types (llama_token_type)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# The regexes as tokenizer.json spells them (ByteLevel's built-in one is GPT-2's).
GPT2_RE = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_CONTRACTIONS = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"
LLAMA3_RE = (
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_RE = (
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_UPPER, _LOWER = r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]", r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]"
GPT4O_RE = (
    rf"[^\r\n\p{{L}}\p{{N}}]?{_UPPER}*{_LOWER}+{_CONTRACTIONS}?"
    rf"|[^\r\n\p{{L}}\p{{N}}]?{_UPPER}+{_LOWER}*{_CONTRACTIONS}?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
DIGITS_RE, DIGIT_RUNS_RE = r"\p{N}", r"\p{N}+"

# The splits a pre-tokenizer applies, in order -> llama.cpp's `tokenizer.ggml.pre`.
# ("smollm" stands for llama.cpp's whole starcoder family: starcoder, refact, command-r,
# smollm, codeshell, exaone, minerva: they share these two regexes and behave alike.)
PRE_TOKENIZERS: dict[tuple[str, ...], str] = {
    (GPT2_RE,): "gpt-2",
    (DIGITS_RE, GPT2_RE): "smollm",
    (LLAMA3_RE,): "llama-bpe",
    (QWEN2_RE,): "qwen2",
    (GPT4O_RE,): "gpt-4o",
}


@dataclass(frozen=True)
class BpeVocab:
    tokens: list[str]
    types: list[int]
    merges: list[str]
    pre: str


def looks_special(text: str) -> bool:
    """TextModel.does_token_look_special."""
    return (
        text in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
        or (text.startswith("<|") and text.endswith("|>"))
        or (text.startswith("<｜") and text.endswith("｜>"))
        or (text.startswith("<unused") and text.endswith(">"))
    )


def bpe_vocab(tokenizer: Mapping[str, Any], vocab_size: int | None, where: str) -> BpeVocab:
    model = tokenizer.get("model") or {}
    if model.get("type") != "BPE":
        raise SourceError(
            f"{where}: tokenizer.json model type {model.get('type')!r} is not supported "
            "(corral converts byte-level BPE tokenizer.json and SentencePiece tokenizer.model)"
        )
    ids: dict[str, int] = {str(k): int(v) for k, v in (model.get("vocab") or {}).items()}
    added = {str(a["content"]): a for a in tokenizer.get("added_tokens") or []}
    ids |= {content: int(a["id"]) for content, a in added.items()}
    if not ids:
        raise SourceError(f"{where}: tokenizer.json has an empty vocabulary")
    n = max(vocab_size or 0, max(ids.values()) + 1)
    reverse = {i: t for t, i in ids.items()}
    tokens, types = [], []
    for i in range(n):
        token = reverse.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
        elif token in added:
            special = bool(added[token].get("special")) or looks_special(token)
            tokens.append(token if special else token.replace("\u2581", " "))
            types.append(CONTROL if special else USER_DEFINED)
        else:
            tokens.append(token)
            types.append(NORMAL)
    merges = _merges(model.get("merges") or [], where)
    return BpeVocab(tokens, types, merges, identify_pre(tokenizer.get("pre_tokenizer"), where))


def _merges(merges: Sequence[Any], where: str) -> list[str]:
    if not merges or isinstance(merges[0], str):
        return [str(m) for m in merges]
    if isinstance(merges[0], list) and len(merges[0]) == 2:
        return [" ".join(part.replace(" ", "\u0120") for part in pair) for pair in merges]
    raise SourceError(f"{where}: tokenizer.json has merges in an unknown format")


def _splits(pre: Mapping[str, Any] | None, where: str) -> tuple[str, ...]:
    """The regexes a tokenizers pre-tokenizer splits with, in order."""
    if pre is None:
        return ()
    kind = pre.get("type")
    if kind == "Sequence":
        return tuple(s for p in pre.get("pretokenizers") or [] for s in _splits(p, where))
    if kind == "ByteLevel":
        return (GPT2_RE,) if pre.get("use_regex", True) else ()
    if kind == "Digits":
        return (DIGITS_RE if pre.get("individual_digits") else DIGIT_RUNS_RE,)
    if kind == "Split" and isinstance(pre.get("pattern"), dict):
        pattern = pre["pattern"].get("Regex") or pre["pattern"].get("String")
        if isinstance(pattern, str) and not pre.get("invert", False):
            return (pattern,)
    raise SourceError(f"{where}: tokenizer.json pre-tokenizer {_describe(pre)} is not supported")


def identify_pre(pre: Mapping[str, Any] | None, where: str) -> str:
    splits = _splits(pre, where)
    name = PRE_TOKENIZERS.get(splits)
    if name is None:
        rules = " then ".join(s if len(s) < 60 else s[:57] + "..." for s in splits) or "none"
        raise SourceError(
            f"{where}: unknown BPE pre-tokenizer (splits: {rules}); corral knows "
            f"{', '.join(sorted(set(PRE_TOKENIZERS.values())))}"
        )
    return name


def _describe(pre: Mapping[str, Any]) -> str:
    kind = pre.get("type", "?")
    return f"{kind}" if kind != "Split" else f"Split({pre.get('pattern')})"
