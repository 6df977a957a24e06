"""Bodies of model management beyond pull/show/delete: /api/create, /api/copy and /api/ps."""

from __future__ import annotations

import codecs
from collections.abc import Mapping
from typing import Any, ClassVar

from corral.client.api.bodies import Message, ModelDetails
from corral.client.api.codec import Wire, wire


def decode_modelfile(data: bytes) -> str:
    """A Modelfile's bytes as text, as Ollama reads them: UTF-8, or UTF-16 when a byte
    order mark says so (Windows PowerShell writes `ollama show --modelfile > Modelfile`
    in UTF-16). The CLI reads a Modelfile so, and the daemon one named by a bare path."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16")
    return data.decode("utf-8")


@wire
class CreateRequest(Wire):
    """Ollama's /api/create: a model built `from` a base (a name, a path or a source) or
    from uploaded `files` ({"model.gguf": "sha256:..."}), with what to change about it.

    Older clients send a Modelfile's text as `modelfile` (and its location as `path`,
    against which relative FROM paths are taken); the other fields then override it.
    `from` is a Python keyword: the field is `from_`, sent and read as "from".
    """

    _ALIASES: ClassVar[Mapping[str, str]] = {
        "name": "model",
        "from": "from_",
        "quantization": "quantize",
    }
    model: str = ""
    from_: str | None = None
    files: dict[str, str] | None = None
    adapters: dict[str, str] | None = None
    quantize: str | None = None
    template: str | None = None
    system: str | None = None
    parameters: dict[str, Any] | None = None
    messages: tuple[Message, ...] | None = None
    license: str | tuple[str, ...] | None = None
    modelfile: str | None = None
    path: str | None = None
    stream: bool = True

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if "from_" in out:
            out["from"] = out.pop("from_")
        return out


@wire
class CopyRequest(Wire):
    source: str = ""
    destination: str = ""


@wire
class ProcessModelResponse(Wire):
    """One loaded model, as /api/ps lists it."""

    name: str
    model: str
    size: int  # bytes in memory: weights and KV cache
    digest: str  # hex, without "sha256:"
    details: ModelDetails = ModelDetails()
    expires_at: str | None = None  # RFC 3339; far in the future when kept forever
    size_vram: int = 0  # always 0: corral runs on the CPU
    context_length: int | None = None


@wire
class ProcessResponse(Wire):
    models: tuple[ProcessModelResponse, ...] = ()
