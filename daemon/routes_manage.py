"""GET /api/ps (what is loaded), POST /api/copy, HEAD|POST /api/blobs/:digest.

A blob upload streams the request body into the blob store, which hashes it
while writing and makes it visible only if it matches the digest in the URL.
An uploaded blob stays pinned (safe from garbage collection) while the daemon
runs, so a later /api/create can use it; after a restart an unreferenced one
is collected like any other.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta

from aiohttp import web

from corral.client.api import (
    CopyRequest,
    ProcessModelResponse,
    ProcessResponse,
    format_time,
)
from corral.daemon.errors import RequestError
from corral.daemon.routes_models import details_of
from corral.daemon.slots import LoadedInfo
from corral.daemon.state import STATE
from corral.daemon.wire_io import json_response, read_request
from corral.registry.blobs import check_room
from corral.registry.errors import CorruptModel
from corral.registry.store import InstalledModel

routes = web.RouteTableDef()

DIGEST_IN_URL = re.compile(r"sha256[:-]([0-9a-f]{64})")
FOREVER = timedelta(seconds=(2**63 - 1) / 1e9)  # Go's longest duration, as Ollama shows it


@routes.get("/api/ps")
async def ps_handler(request: web.Request) -> web.Response:
    state = request.app[STATE]
    installed = await asyncio.to_thread(state.store.list)
    by_name = {m.name: m for m in installed}
    by_digest: dict[str, InstalledModel] = {}
    for model in sorted(installed, key=lambda m: m.name):
        by_digest.setdefault(model.digest, model)
    entries = []
    for info in state.scheduler.loaded():  # most recently used first
        model = by_name.get(info.name) or by_digest.get(info.digest)
        if model is not None:  # a deleted model is on its way out: not listed
            entries.append(_ps_entry(info, model))
    return json_response(ProcessResponse(models=tuple(entries)))


@routes.post("/api/copy")
async def copy_handler(request: web.Request) -> web.Response:
    req = await read_request(request, CopyRequest)
    await asyncio.to_thread(request.app[STATE].store.copy, req.source, req.destination)
    return web.Response(status=200)


@routes.head("/api/blobs/{digest}")
async def blob_exists_handler(request: web.Request) -> web.Response:
    digest = _digest(request)
    exists = await asyncio.to_thread(request.app[STATE].store.blobs.exists, digest)
    return web.Response(status=200 if exists else 404)


@routes.post("/api/blobs/{digest}")
async def blob_upload_handler(request: web.Request) -> web.Response:
    digest = _digest(request)
    state = request.app[STATE]
    blobs = state.store.blobs
    if await asyncio.to_thread(blobs.exists, digest):
        return web.Response(status=200)
    keep_free = state.config.min_free_disk
    # a declared length that does not fit is refused before a byte is written
    await asyncio.to_thread(check_room, blobs.root, request.content_length or 0, keep_free)
    body = _BodyReader(request, asyncio.get_running_loop())
    with state.cancellable() as cancel:

        def put() -> str:
            return blobs.put_stream(
                body, expected=digest, cancel=cancel, what="the upload", keep_free=keep_free
            )

        try:
            await asyncio.get_running_loop().run_in_executor(state.workers, put)
        except CorruptModel as e:  # the bytes do not hash to the digest: the sender's fault
            raise RequestError(str(e)) from None
    return web.Response(status=201)


def _digest(request: web.Request) -> str:
    text = request.match_info["digest"]
    match = DIGEST_IN_URL.fullmatch(text)
    if match is None:
        raise RequestError(f"invalid digest '{text[:80]}': expected sha256:<64 hex digits>")
    return f"sha256:{match.group(1)}"


class _BodyReader:
    """The request body as a blocking file for a worker thread (read() at most n bytes)."""

    def __init__(self, request: web.Request, loop: asyncio.AbstractEventLoop) -> None:
        self.content = request.content
        self.loop = loop

    def read(self, n: int = -1) -> bytes:
        return asyncio.run_coroutine_threadsafe(self.content.read(n), self.loop).result()


def _ps_entry(info: LoadedInfo, model: InstalledModel) -> ProcessModelResponse:
    # a copy stopped (or replaced) while a request still uses it: expired, as Ollama
    # shows one being unloaded ("Stopping..." in `ps`)
    now = datetime.now(UTC)
    expires = now if info.stopping else info.expires_at or now + FOREVER
    return ProcessModelResponse(
        name=model.name,
        model=model.name,
        size=info.size,
        digest=info.digest.removeprefix("sha256:"),
        details=details_of(model),
        expires_at=format_time(expires),
        size_vram=0,
        context_length=info.num_ctx,
    )
