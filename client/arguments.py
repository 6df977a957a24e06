"""Command-line arguments that are not UTF-8 (typed in a Latin-1 terminal, piped from
an old file): Python keeps their bytes as lone surrogates, which cannot be sent."""

from __future__ import annotations


def as_utf8(text: str) -> str:
    """An argument as UTF-8 text: bytes that are not UTF-8 (which Python keeps as lone
    surrogates, unsendable) become U+FFFD, as Ollama's JSON makes them."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def quoted_argument(e: UnicodeEncodeError) -> str:
    """The quoted string (a JSON value) holding the characters that could not be encoded,
    the bytes Python kept as lone surrogates written as \\xNN."""
    start = e.object.rfind('"', 0, e.start) + 1
    end = e.object.find('"', e.end)
    text = e.object[start : end if end >= 0 else None]
    return "'" + "".join(_escaped(c) for c in text) + "'"


def _escaped(char: str) -> str:
    if "\udc80" <= char <= "\udcff":  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{ord(char) - 0xDC00:02x}"
    return char if not "\ud800" <= char <= "\udfff" else f"\\u{ord(char):04x}"
