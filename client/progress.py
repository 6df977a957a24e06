"""Pull progress on the terminal, as `ollama pull` shows it.

A tqdm bar for each download or copy (keyed by digest, else by status), and
one line for every other status change. Bars are drawn only on a terminal;
elsewhere (logs, pipes) the status lines alone are printed.
"""

from __future__ import annotations

import sys
from typing import TextIO

from tqdm import tqdm

from corral.client.api import ProgressResponse


class PullDisplay:
    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.bars: dict[str, tqdm] = {}
        self.status = ""

    def update(self, event: ProgressResponse) -> None:
        if event.total:
            self._bar(event)
        elif event.status != self.status and event.status != "success":
            self._line(event.status)
        self.status = event.status

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()

    def __enter__(self) -> PullDisplay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _bar(self, event: ProgressResponse) -> None:
        key = event.digest or event.status
        bar = self.bars.get(key)
        if bar is None:
            if event.status != self.status:
                self._line(event.status)
            bar = tqdm(
                total=event.total,
                desc=event.status,
                unit="B",
                unit_scale=True,
                unit_divisor=1000,
                file=self.stream,
                disable=None,
                leave=True,
            )
            self.bars[key] = bar
        bar.update(max(0, (event.completed or 0) - bar.n))

    def _line(self, text: str) -> None:
        if any(not bar.disable for bar in self.bars.values()):
            tqdm.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)
