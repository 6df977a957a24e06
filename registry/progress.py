"""Progress events of a pull, shaped like Ollama's /api/pull stream."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class PullProgress:
    """One event: `status` always; `digest`, `total` and `completed` while bytes move.

    Statuses: "pulling manifest", "pulling <12 hex>", "copying <file>",
    "extracting <file>", "assembling part <i>/<n>", "verifying sha256 digest",
    "converting to GGUF [type]", "quantizing to <type>", "writing model file", "writing manifest",
    "success", and one "<why a source failed>, trying <next source>" line
    when a source fails over to the next. A create (create.py) adds Ollama's
    "using existing layer <digest>", "quantizing <type> model to <type>" and
    "creating new layer <digest>".
    """

    status: str
    digest: str | None = None
    total: int | None = None
    completed: int | None = None


ProgressFn = Callable[[PullProgress], None]


def short(digest: str) -> str:
    """The 12 hex characters Ollama shows for a digest."""
    return digest.removeprefix("sha256:")[:12]
