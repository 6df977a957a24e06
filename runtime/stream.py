"""Turning generated token ids into text pieces, safely.

Pieces never split a UTF-8 character (an incremental decoder holds back
incomplete byte sequences) and never show the start of a stop string before
it is known whether the whole stop string follows.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Sequence


class TextStream:
    """Feeds token bytes in, gives printable text out, and detects stop strings."""

    def __init__(self, token_bytes: Callable[[int], bytes], stop: Sequence[str] = ()) -> None:
        self._token_bytes = token_bytes
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = tuple(s for s in stop if s)
        self._held = ""
        self.stopped = False

    def push(self, token: int) -> str:
        """Add one token; return the text that is now safe to show (maybe empty)."""
        if self.stopped:
            return ""
        self._held += self._decoder.decode(self._token_bytes(token))
        return self._release()

    def finish(self) -> str:
        """Flush what is held back at the end of generation."""
        if self.stopped:
            return ""
        self._held += self._decoder.decode(b"", final=True)
        text, self._held = self._held, ""
        return text

    def _release(self) -> str:
        held = self._held
        cut = min((i for i in (held.find(s) for s in self._stop) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._held = ""
            return held[:cut]
        keep = self._longest_stop_prefix_suffix(held)
        self._held = held[len(held) - keep :] if keep else ""
        return held[: len(held) - keep]

    def _longest_stop_prefix_suffix(self, text: str) -> int:
        """Length of the longest end of `text` that begins some stop string."""
        best = 0
        for stop in self._stop:
            for n in range(min(len(stop) - 1, len(text)), best, -1):
                if stop.startswith(text[-n:]):
                    best = n
                    break
        return best
