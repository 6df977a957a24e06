"""Bodies of model management beyond pull/show/delete: /api/copy and /api/ps."""

from __future__ import annotations

from corral.client.api.bodies import ModelDetails
from corral.client.api.codec import Wire, wire


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
