"""Model management: GET /api/tags, POST /api/show, DELETE /api/delete, POST /api/pull.

/api/show's `modelfile` is Ollama's classic text, or corral's YAML when the request
asks for `modelfile_format: "yaml"` (what `corral show --modelfile` prints).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import numpy as np
from aiohttp import web

from corral.client.api import (
    DeleteRequest,
    ListModelResponse,
    ListResponse,
    Message,
    ModelDetails,
    ProgressResponse,
    PullRequest,
    ShowRequest,
    ShowResponse,
    format_time,
)
from corral.daemon.errors import RequestError
from corral.daemon.prompts import go_template
from corral.daemon.security import refuse_local_files
from corral.daemon.state import STATE, DaemonState
from corral.daemon.wire_io import (
    SUCCESS,
    answer_progress,
    json_response,
    read_request,
)
from corral.daemon.worker import Emit, events_from_thread
from corral.registry.modelfile_render import to_classic, to_yaml
from corral.registry.pull import PullProgress, pull
from corral.registry.store import InstalledModel
from corral.runtime.chat_template import PLAIN_TEMPLATE
from corral.runtime.gguf import GGUFFile, GGUFMetadata
from corral.runtime.tokenizer.vocab import has_fill_in_middle

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

# GGUF keys too big to send unless asked (`verbose`): null, as Ollama does
BULKY_KEYS = frozenset(
    f"tokenizer.ggml.{k}" for k in ("tokens", "merges", "token_type", "scores", "added_tokens")
)
# Arrays longer than this are null unless `verbose` asks for the vocabulary's (Ollama's
# rule), and longer than the largest vocabularies never: an uploaded file's array of
# millions of items would cost ~20 bytes of memory per byte of file to send.
SHOWN_ITEMS = 4096
SHOWN_ITEMS_VERBOSE = 1 << 20
HIDDEN_KEYS = frozenset({"tokenizer.chat_template"})  # sent as `template` instead
PARAMETER_NAME_WIDTH = 30  # Ollama's `%-30s` in /api/show's parameters
# /api/show's `modelfile_format` -> how the Modelfile is written (Ollama's clients: classic)
MODELFILE_FORMATS = {"ollama": to_classic, "yaml": to_yaml}


@routes.get("/api/tags")
async def tags_handler(request: web.Request) -> web.Response:
    models = await asyncio.to_thread(request.app[STATE].store.list)
    return json_response(ListResponse(models=tuple(_list_entry(m) for m in models)))


@routes.post("/api/show")
async def show_handler(request: web.Request) -> web.Response:
    req = await read_request(request, ShowRequest)
    render = MODELFILE_FORMATS.get(req.modelfile_format or "ollama")
    if render is None:
        known = " or ".join(f"'{k}'" for k in MODELFILE_FORMATS)
        raise RequestError(f"field 'modelfile_format' must be {known}")
    installed = await request.app[STATE].resolve(req.model)
    metadata, capabilities = await asyncio.to_thread(_model_info, installed, req.verbose)
    model = _as_shown(installed, req)
    manifest = model.manifest
    examples = manifest.messages
    return json_response(
        ShowResponse(
            license=manifest.license or "",
            modelfile=render(model),
            parameters=format_parameters(installed.manifest.parameters),  # its own, as Ollama
            # the template generation renders with: the model's own, or corral's plain one
            template=manifest.template
            or str(metadata.get("tokenizer.chat_template") or "")
            or PLAIN_TEMPLATE,
            system=manifest.system or "",
            details=details_of(model),
            model_info={k: v for k, v in metadata.items() if k not in HIDDEN_KEYS},
            messages=tuple(Message(role=m["role"], content=m["content"]) for m in examples),
            capabilities=capabilities,
            modified_at=format_time(model.modified_at),
        )
    )


def _as_shown(model: InstalledModel, req: ShowRequest) -> InstalledModel:
    """The model with the request's system prompt and parameters in place of its own (a
    chat's `/set system` and `/set parameter`): Ollama's show puts them in the modelfile
    and the system prompt, not in `parameters`."""
    options = req.options.to_dict() if req.options is not None else {}
    if req.system is None and not options:
        return model
    manifest = model.manifest
    manifest = dataclasses.replace(
        manifest,
        system=manifest.system if req.system is None else req.system,
        parameters={**manifest.parameters, **{k: _plain(v) for k, v in options.items()}},
    )
    return dataclasses.replace(model, manifest=manifest)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


@routes.delete("/api/delete")
async def delete_handler(request: web.Request) -> web.Response:
    req = await read_request(request, DeleteRequest)
    state = request.app[STATE]
    # a blob no other name uses is collected, and so unloaded (app.py); a manifest that
    # cannot be read can still be removed
    await asyncio.to_thread(state.store.delete, req.model)
    return web.Response(status=200)


@routes.post("/api/pull")
async def pull_handler(request: web.Request) -> web.StreamResponse:
    req = await read_request(request, PullRequest)
    refuse_local_files(request, "the source", req.model)
    events = _pull_events(request.app[STATE], req.model)
    return await answer_progress(request, events, req.stream)


async def _pull_events(state: DaemonState, name: str) -> AsyncIterator[ProgressResponse]:
    """The registry's progress as wire events, ending with {"status": "success"}."""
    installed: list[InstalledModel] = []
    with state.cancellable() as cancel:

        def work(emit: Emit[PullProgress]) -> None:
            installed.append(pull(state.store, name, progress=emit, cancel=cancel))

        async for p in events_from_thread(work, cancel, state.workers):
            if p.status != SUCCESS:
                yield ProgressResponse(
                    status=p.status, digest=p.digest, total=p.total, completed=p.completed
                )
    if installed and installed[0].name != name.strip().lower():  # a file: say its name
        yield ProgressResponse(status=f"installed as {installed[0].name}")
    yield ProgressResponse(status=SUCCESS)


def _list_entry(model: InstalledModel) -> ListModelResponse:
    return ListModelResponse(
        name=model.name,
        model=model.name,
        modified_at=format_time(model.modified_at),
        size=model.size,
        digest=model.digest.removeprefix("sha256:"),
        details=details_of(model),
    )


def details_of(model: InstalledModel) -> ModelDetails:
    m = model.manifest
    return ModelDetails(
        format=m.format,
        family=m.architecture,
        families=(m.architecture,) if m.architecture else None,
        parameter_size=m.parameter_size,
        quantization_level=m.quantization,
    )


def format_parameters(parameters: Mapping[str, Any]) -> str:
    """One `name value` line per value (lists give one line each), as Ollama prints them."""
    lines = []
    for name in sorted(parameters):
        value = parameters[name]
        for item in value if isinstance(value, list) else [value]:
            lines.append(f"{name:<{PARAMETER_NAME_WIDTH}} {json.dumps(item, ensure_ascii=False)}")
    return "\n".join(lines)


def capabilities_of(metadata: Mapping[str, Any], template: str | None) -> tuple[str, ...]:
    """Ollama's capability names: every model completes; one with fill-in-the-middle
    tokens, or a Go template that reads `.Suffix` (Ollama's way), also inserts."""
    go = go_template(template or "")
    inserts = has_fill_in_middle(metadata) or (go is not None and go.uses_suffix)
    return ("completion", "insert") if inserts else ("completion",)


def _too_long(metadata: GGUFMetadata, key: str, verbose: bool) -> bool:
    """Whether /api/show leaves the value of `key` out (null): the vocabulary's bulky
    arrays unless `verbose`, and any array past the limits."""
    if key in BULKY_KEYS and not verbose:
        return True
    length = metadata.array_length(key) if metadata.is_array(key) else 0
    limit = SHOWN_ITEMS_VERBOSE if verbose or key in BULKY_KEYS else SHOWN_ITEMS
    return length > limit


def _model_info(model: InstalledModel, verbose: bool) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The GGUF's metadata (bulky vocabulary arrays only when `verbose`) and what the model
    can do."""
    info: dict[str, Any] = {}
    with GGUFFile.open(model.model_path) as gguf:
        for key in gguf.metadata:
            if _too_long(gguf.metadata, key, verbose):
                info[key] = None
                continue
            value = gguf.metadata[key]
            info[key] = value.tolist() if isinstance(value, np.ndarray) else value
        capabilities = capabilities_of(gguf.metadata, model.manifest.template)
    info.setdefault("general.parameter_count", model.manifest.parameter_count)
    return info, capabilities
