"""Bodies of /api/embed (batched, L2-normalised) and the older /api/embeddings."""

from __future__ import annotations

from corral.client.api.bodies import Metrics, Options
from corral.client.api.codec import Wire, wire
from corral.client.api.values import parse_duration


def _check_keep_alive(value: str | float | None) -> None:
    if value is not None:
        parse_duration(value)


@wire
class EmbedRequest(Wire):
    model: str = ""
    input: str | tuple[str, ...] = ()
    truncate: bool | None = None  # None and True: cut inputs to the context window
    dimensions: int | None = None  # keep this many leading dimensions, then re-normalise
    keep_alive: str | float | None = None
    options: Options | None = None

    def __post_init__(self) -> None:
        _check_keep_alive(self.keep_alive)

    @property
    def inputs(self) -> tuple[str, ...]:
        """The texts to embed; an empty string is no input, as in Ollama."""
        if isinstance(self.input, str):
            return (self.input,) if self.input else ()
        return self.input


@wire
class EmbedResponse(Metrics):
    model: str
    embeddings: tuple[tuple[float, ...], ...] = ()


@wire
class EmbeddingsRequest(Wire):
    model: str = ""
    prompt: str = ""
    keep_alive: str | float | None = None
    options: Options | None = None

    def __post_init__(self) -> None:
        _check_keep_alive(self.keep_alive)


@wire
class EmbeddingsResponse(Wire):
    embedding: tuple[float, ...] = ()
