"""POST /api/create: build a model from a Modelfile, streaming its steps as NDJSON.

The request is Ollama's: `model`, and `from` (a name, a path or a source) or
`files` (a GGUF uploaded with POST /api/blobs), with `quantize`, `template`,
`system`, `parameters`, `messages`, `license`. Older clients send the
Modelfile's text as `modelfile` (and its location as `path`, for relative
FROM paths); fields given beside it override it. Everything that can be
checked without work (the name, the Modelfile, the quantization type) is
checked before the stream starts, so it is answered with its own status:
400 for a bad Modelfile or type, 404 for a base that is neither installed nor
in the catalog.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiohttp import web

from corral.client.api import CreateRequest, ProgressResponse, decode_modelfile
from corral.daemon.errors import RequestError
from corral.daemon.security import refuse_local_files
from corral.daemon.state import STATE, DaemonState
from corral.daemon.wire_io import (
    answer_progress,
    read_request,
)
from corral.daemon.worker import Emit, events_from_thread
from corral.registry.create import create
from corral.registry.modelfile import REFUSED, Modelfile
from corral.registry.modelfile_parse import parse_modelfile
from corral.registry.names import ModelName
from corral.registry.progress import PullProgress

routes = web.RouteTableDef()


@routes.post("/api/create")
async def create_handler(request: web.Request) -> web.StreamResponse:
    req = await read_request(request, CreateRequest)
    if not req.model.strip():
        raise RequestError("missing 'model': the name of the model to create")
    ModelName.parse(req.model)
    refuse_local_files(request, "the Modelfile path", req.path)
    modelfile = modelfile_of(req)
    refuse_local_files(request, "the base", modelfile.from_)
    events = _create_events(request.app[STATE], req.model, modelfile)
    return await answer_progress(request, events, req.stream)


def modelfile_of(req: CreateRequest) -> Modelfile:
    """The request as a checked Modelfile (ModelfileError, a 400, when it is not one)."""
    if req.adapters:
        raise RequestError(REFUSED["adapter"])
    where = Path(req.path).expanduser() if req.path else None
    base_dir = where.parent if where else None
    modelfile = Modelfile()
    text = req.modelfile if req.modelfile is not None else _read(where)
    if text is not None:
        origin = where.name if where else "Modelfile"
        modelfile = parse_modelfile(text, base_dir=base_dir, origin=origin)
    fields: dict[str, Any] = {
        "from": req.from_,
        "quantize": req.quantize,
        "parameters": req.parameters,
        "template": req.template,
        "system": req.system,
        "messages": None if req.messages is None else [_message(m) for m in req.messages],
        "license": list(req.license) if isinstance(req.license, tuple) else req.license,
    }
    modelfile = modelfile.overridden(fields, base_dir)
    if req.files:
        bad = [k for k, v in req.files.items() if not isinstance(v, str)]
        if bad:
            raise RequestError(f"field 'files' must map file names to digests ({bad[0]!r})")
        modelfile = replace(modelfile, files=tuple(req.files.items()))
    return modelfile


def _read(path: Path | None) -> str | None:
    """The Modelfile at `path` (Ollama's oldest clients send only its path)."""
    if path is None:
        return None
    try:
        return decode_modelfile(path.read_bytes())
    except (OSError, UnicodeDecodeError) as e:
        raise RequestError(f"cannot read the Modelfile {path}: {e}") from None


def _message(message: Any) -> dict[str, Any]:
    return {"role": message.role, "content": message.content}


async def _create_events(
    state: DaemonState, name: str, modelfile: Modelfile
) -> AsyncIterator[ProgressResponse]:
    """The registry's progress as wire events, ending with {"status": "success"}."""
    with state.cancellable() as cancel:

        def work(emit: Emit[PullProgress]) -> None:
            create(state.store, name, modelfile, progress=emit, cancel=cancel)

        async for p in events_from_thread(work, cancel, state.workers):
            yield ProgressResponse(
                status=p.status, digest=p.digest, total=p.total, completed=p.completed
            )
