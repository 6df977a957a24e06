"""Cutting special tokens out of text before a tokenizer model sees it.

This is llama.cpp's `tokenizer_st_partition` (src/llama-vocab.cpp), shared by every
tokenizer model: special tokens (CONTROL, UNKNOWN and USER_DEFINED) are taken in
order of decreasing text length, and each one cuts every occurrence of itself out
of the text fragments the longer ones left. With `parse_special=False` only
USER_DEFINED tokens are cut. A token with LSTRIP (RSTRIP) also eats the C-locale
whitespace just before (after) each occurrence.

Vocabularies can have thousands of special tokens (gemma-3: 6,400), so instead of
searching the text for each of them, one regex built from a trie of all special
texts finds, at every position, the longest special token starting there; those
and the special tokens that are prefixes of them are the only ones that can occur,
and only they run through llama.cpp's ordered cutting.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from typing import NamedTuple

_C_SPACE = " \t\n\v\f\r"  # isspace() in the C locale, as llama.cpp strips
_END = ""  # trie key marking the end of a special text


class Special(NamedTuple):
    """One special token as the partitioner sees it."""

    text: str
    id: int
    user_defined: bool  # cut out even when parse_special is False
    lstrip: bool = False
    rstrip: bool = False


class SpecialSplitter:
    """Splits text into plain-text fragments and special token ids."""

    def __init__(self, specials: Iterable[Special]) -> None:
        # Longest first; llama.cpp's std::sort leaves equal lengths in no set order,
        # lowest id first here. A text listed twice is cut by its first entry only.
        ordered = sorted(specials, key=lambda s: (-len(s.text), s.id))
        self._rank: dict[str, int] = {}
        self._by_text: dict[str, Special] = {}
        for s in ordered:
            if s.text not in self._by_text:
                self._rank[s.text] = len(self._rank)
                self._by_text[s.text] = s
        self._finder: re.Pattern[str] | None = None  # compiled on first use (~50 ms for 6k)
        self._prefixes: dict[str, tuple[str, ...]] = {}

    def __len__(self) -> int:
        return len(self._by_text)

    def split(self, text: str, parse_special: bool) -> list[str | int]:
        """`text` as a list of non-empty text fragments and special token ids."""
        frags: list[str | int] = [text] if text else []
        for special in self._candidates(text):
            if not (parse_special or special.user_defined):
                continue
            new: list[str | int] = []
            for frag in frags:
                if isinstance(frag, int) or special.text not in frag:
                    new.append(frag)
                else:
                    _cut(frag, special, new)
            frags = new
        return frags

    def _candidates(self, text: str) -> list[Special]:
        """The special tokens occurring in `text`, in cutting order."""
        if not self._by_text:
            return []
        if self._finder is None:
            self._finder = _compile_finder(self._by_text)
        found: set[str] = set()
        for longest in set(self._finder.findall(text)):
            found.add(longest)
            found.update(self._prefixes_of(longest))
        return [self._by_text[t] for t in sorted(found, key=self._rank.__getitem__)]

    def _prefixes_of(self, text: str) -> tuple[str, ...]:
        prefixes = self._prefixes.get(text)
        if prefixes is None:
            cuts = (text[:k] for k in range(1, len(text)))
            prefixes = self._prefixes[text] = tuple(p for p in cuts if p in self._by_text)
        return prefixes


def _cut(frag: str, special: Special, out: list[str | int]) -> None:
    """Every occurrence of `special` in `frag`, left to right, with its stripping."""
    tok, pos, end = special.text, 0, len(frag)
    while (match := frag.find(tok, pos)) >= 0:
        left = frag[pos:match]
        if special.lstrip:
            left = left.rstrip(_C_SPACE)
        if left:
            out.append(left)
        out.append(special.id)
        pos = match + len(tok)
        if special.rstrip:
            while pos < end and frag[pos] in _C_SPACE:
                pos += 1
    if pos < end:
        out.append(frag[pos:])


def _compile_finder(texts: Collection[str]) -> re.Pattern[str]:
    """A regex whose `findall` gives, at every position where a special text starts,
    the longest one starting there (a zero-width lookahead, so matches may overlap)."""
    trie: dict[str, dict] = {}
    for text in texts:
        node = trie
        for ch in text:
            node = node.setdefault(ch, {})
        node[_END] = {}
    try:
        return re.compile("(?=(" + _trie_pattern(trie) + "))")
    except RecursionError:  # very deep trie: a plain alternation, longest texts first
        alts = "|".join(map(re.escape, sorted(texts, key=len, reverse=True)))
        return re.compile("(?=(" + alts + "))")


def _trie_pattern(node: dict[str, dict]) -> str:
    """Regex for the texts below `node`; optional groups are greedy, so the longest wins.
    Characters whose subtries give the same pattern share a class (`<unused[0-9]>`)."""
    tails: dict[str, list[str]] = {}
    for ch, child in node.items():
        if ch != _END:
            tails.setdefault(_trie_pattern(child), []).append(re.escape(ch))
    alts = [(c[0] if len(c) == 1 else f"[{''.join(c)}]") + tail for tail, c in tails.items()]
    if not alts:
        return ""
    body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
    return f"(?:{body})?" if _END in node else body
