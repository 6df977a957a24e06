"""Text formatting that matches Ollama's CLI: sizes, ages, Go durations, padded tables,
answers wrapped at words."""

from __future__ import annotations

import math
import shutil
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TextIO

from corral.client.api import Metrics

TABLE_PADDING = "    "  # Ollama's tablewriter padding
FOREVER_YEARS = 20  # an expiry further ahead than this is "Forever" (Ollama's HumanTime)
SECONDS_PER_YEAR = 365 * 24 * 3600

# (threshold, unit) from large to small, decimal units as Ollama's HumanBytes
_BYTE_UNITS = ((1000**4, "TB"), (1000**3, "GB"), (1000**2, "MB"), (1000, "KB"))
# (below this many hours, hours per unit, unit), as Ollama's humanDuration
_HOUR_STEPS = (
    (48, 1, "hours"),
    (24 * 14, 24, "days"),
    (24 * 60, 24 * 7, "weeks"),
    (24 * 730, 24 * 30, "months"),
)


def human_bytes(n: int) -> str:
    """4.7 GB, 98 MB, 512 B: one decimal below 10 unless whole, as Ollama prints sizes."""
    for threshold, unit in _BYTE_UNITS:
        if n >= threshold:
            value = n / threshold
            if value >= 10 or value == math.trunc(value):
                return f"{int(value)} {unit}"
            return f"{value:.1f} {unit}"
    return f"{n} B"


def human_duration(seconds: float) -> str:
    """ "Less than a second", "About a minute", "3 hours", "2 weeks" (Ollama's wording)."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s < 60:
        return "1 second" if s == 1 else f"{s} seconds"
    minutes = s // 60
    if minutes < 60:
        return "About a minute" if minutes == 1 else f"{minutes} minutes"
    hours = round(seconds / 3600)
    if hours == 1:
        return "About an hour"
    for limit, per, unit in _HOUR_STEPS:
        if hours < limit:
            return f"{hours // per} {unit}"
    return f"{int(seconds // 3600) // 24 // 365} years"


def human_time(moment: datetime | None, zero: str = "Never", now: datetime | None = None) -> str:
    """ "2 days ago", "5 minutes from now", "Forever", as Ollama's HumanTime."""
    if moment is None:
        return zero
    delta = ((now or datetime.now(UTC)) - moment).total_seconds()
    if delta < -FOREVER_YEARS * SECONDS_PER_YEAR:
        return "Forever"
    if delta < 0:
        return human_duration(-delta) + " from now"
    return human_duration(delta) + " ago"


def processor(size: int, size_vram: int) -> str:
    """Where a loaded model sits, as `ollama ps` says it: "100% CPU", "48%/52% CPU/GPU"."""
    if size_vram == 0:
        return "100% CPU"
    if size_vram == size:
        return "100% GPU"
    if size_vram > size or size == 0:
        return "Unknown"
    cpu = round((size - size_vram) / size * 100)
    return f"{cpu}%/{100 - cpu}% CPU/GPU"


def until(expires: datetime | None, now: datetime | None = None) -> str:
    """`ollama ps`'s UNTIL: "4 minutes from now", "Forever", "Stopping..." once past."""
    if expires is not None and expires <= (now or datetime.now(UTC)):
        return "Stopping..."
    return human_time(expires, "Never", now)


def go_duration(ns: int) -> str:
    """A duration as Go's time.Duration prints it: 1.2345s, 12.3ms, 1m2.5s, 450µs."""
    if ns == 0:
        return "0s"
    sign, u = ("-" if ns < 0 else ""), abs(ns)
    if u < 1_000:
        return f"{sign}{u}ns"
    if u < 1_000_000:
        return f"{sign}{_fraction(u, 3)}µs"
    if u < 1_000_000_000:
        return f"{sign}{_fraction(u, 6)}ms"
    hours, rest = divmod(u, 3600 * 10**9)
    minutes, rest = divmod(rest, 60 * 10**9)
    text = f"{_fraction(rest, 9)}s"
    if hours or minutes:
        text = f"{minutes}m{text}"
    if hours:
        text = f"{hours}h{text}"
    return sign + text


def _fraction(value: int, digits: int) -> str:
    whole, frac = divmod(value, 10**digits)
    decimals = f"{frac:0{digits}d}".rstrip("0")
    return f"{whole}.{decimals}" if decimals else str(whole)


def table(rows: Sequence[Sequence[str]], header: Sequence[str] | None = None) -> str:
    """Left-aligned columns separated by four spaces, no borders (Ollama's list/show)."""
    all_rows = [list(header)] if header else []
    all_rows += [list(r) for r in rows]
    if not all_rows:
        return ""
    width = [max(len(r[i]) if i < len(r) else 0 for r in all_rows) for i in range(len(all_rows[0]))]
    width += [0] * (max(len(r) for r in all_rows) - len(width))
    lines = [
        TABLE_PADDING.join(cell.ljust(width[i]) for i, cell in enumerate(r)).rstrip()
        for r in all_rows
    ]
    return "\n".join(lines)


def timing_summary(m: Metrics) -> list[str]:
    """The lines `ollama run --verbose` prints after an answer, for the figures present."""
    lines = []
    if m.total_duration:
        lines.append(f"total duration:       {go_duration(m.total_duration)}")
    if m.load_duration:
        lines.append(f"load duration:        {go_duration(m.load_duration)}")
    if m.prompt_eval_count:
        lines.append(f"prompt eval count:    {m.prompt_eval_count} token(s)")
    if m.prompt_eval_duration:
        rate = (m.prompt_eval_count or 0) / (m.prompt_eval_duration / 1e9)
        lines.append(f"prompt eval duration: {go_duration(m.prompt_eval_duration)}")
        lines.append(f"prompt eval rate:     {rate:.2f} tokens/s")
    if m.eval_count:
        lines.append(f"eval count:           {m.eval_count} token(s)")
    if m.eval_duration:
        rate = (m.eval_count or 0) / (m.eval_duration / 1e9)
        lines.append(f"eval duration:        {go_duration(m.eval_duration)}")
        lines.append(f"eval rate:            {rate:.2f} tokens/s")
    return lines


WRAP_MARGIN = 5  # Ollama's displayResponse wraps 5 columns before the terminal's edge


@dataclass
class WordWrap:
    """Streamed text broken into lines of at most `width` columns at spaces, as `ollama run`
    wraps answers on a terminal (where the terminal itself would cut words in two).

    A word is held back until it ends (a space or newline) or `flush()`; a word wider
    than a line is let through as it comes, for the terminal to break."""

    width: int
    column: int = 0  # columns already printed on the current line
    word: str = ""  # the word being received, not printed yet
    spilling: bool = False  # the word is too long for any line: it goes through as it comes

    def feed(self, text: str) -> str:
        return "".join(self._char(char) for char in text)

    def _char(self, char: str) -> str:
        if char in " \n":
            text = self.flush()
            self.spilling = False
            if char == "\n":
                self.column = 0
                return text + "\n"
            return text + self._space()
        if self.spilling:
            self.column += _width(char)
            return char
        self.word += char
        if _width(self.word) < self.width:
            return ""
        self.spilling = True
        return self.flush()

    def flush(self) -> str:
        """The word held back, at the end of the answer."""
        text, self.word = self._place(self.word), ""
        return text

    def _place(self, word: str) -> str:
        width = _width(word)
        if word and self.column and self.column + width > self.width:
            self.column = width
            return "\n" + word
        self.column += width
        return word

    def _space(self) -> str:
        if self.column + 1 > self.width:  # the space ends the line
            self.column = 0
            return "\n"
        self.column += 1
        return " "


def _width(text: str) -> int:
    """Terminal columns: East Asian wide and full-width characters take two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def terminal_wrap(stream: TextIO) -> WordWrap | None:
    """A wrapper for answers written to `stream` when it is a terminal wide enough to wrap
    (None for a pipe or a file: their lines stay as the model wrote them)."""
    if not stream.isatty():
        return None
    columns = shutil.get_terminal_size().columns
    return WordWrap(columns - WRAP_MARGIN) if columns >= 2 * WRAP_MARGIN else None
