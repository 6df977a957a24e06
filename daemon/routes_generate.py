"""POST /api/generate and /api/chat: streamed NDJSON or one aggregated JSON answer."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from corral.client.api import (
    ChatRequest,
    ChatResponse,
    GenerateRequest,
    GenerateResponse,
    Message,
    Wire,
    now_rfc3339,
    parse_duration,
)
from corral.daemon import prompts
from corral.daemon.generation import Finished, generate
from corral.daemon.settings import GenerationSettings, settings_for
from corral.daemon.state import STATE, DaemonState
from corral.daemon.wire_io import json_response, read_request, stream_ndjson
from corral.registry.store import InstalledModel
from corral.runtime.engine import Engine

routes = web.RouteTableDef()

PieceBody = Callable[[str], Wire]
FinalBody = Callable[[Finished | None, str], Wire]  # None: a load/unload without generation


@routes.post("/api/generate")
async def generate_handler(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter_ns()
    req = await read_request(request, GenerateRequest)
    prompts.refuse_unsupported(req)
    state, model, settings, keep_alive = await _prepare(request, req)

    def piece(text: str) -> Wire:
        return GenerateResponse(model=req.model, created_at=now_rfc3339(), response=text)

    def final(finished: Finished | None, text: str) -> Wire:
        return GenerateResponse(
            model=req.model,
            created_at=now_rfc3339(),
            response=text,
            done=True,
            **_final_fields(finished, keep_alive),
        )

    if not req.prompt:
        await _load_or_unload(state, model, settings, keep_alive)
        return json_response(final(None, ""))
    conversation = prompts.generate_conversation(req, model.manifest)

    def render(engine: Engine) -> str:
        return req.prompt if req.raw else prompts.render(engine, model.manifest, conversation)

    pieces = generate(state, model, settings, keep_alive, render, started)
    return await _respond(request, req.stream, pieces, piece, final)


@routes.post("/api/chat")
async def chat_handler(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter_ns()
    req = await read_request(request, ChatRequest)
    prompts.refuse_unsupported(req)
    state, model, settings, keep_alive = await _prepare(request, req)

    def piece(text: str) -> Wire:
        message = Message(role="assistant", content=text)
        return ChatResponse(model=req.model, created_at=now_rfc3339(), message=message)

    def final(finished: Finished | None, text: str) -> Wire:
        return ChatResponse(
            model=req.model,
            created_at=now_rfc3339(),
            done=True,
            message=Message(role="assistant", content=text),
            **_final_fields(finished, keep_alive),
        )

    if not req.messages:
        await _load_or_unload(state, model, settings, keep_alive)
        return json_response(final(None, ""))
    conversation = prompts.chat_conversation(req.messages, model.manifest)

    def render(engine: Engine) -> str:
        return prompts.render(engine, model.manifest, conversation)

    pieces = generate(state, model, settings, keep_alive, render, started)
    return await _respond(request, req.stream, pieces, piece, final)


async def _prepare(
    request: web.Request, req: GenerateRequest | ChatRequest
) -> tuple[DaemonState, InstalledModel, GenerationSettings, float | None]:
    state = request.app[STATE]
    model = await state.resolve(req.model)
    settings = settings_for(req.options, model.manifest.parameters, state.config.num_ctx)
    keep_alive = None if req.keep_alive is None else parse_duration(req.keep_alive)
    return state, model, settings, keep_alive


async def _load_or_unload(
    state: DaemonState,
    model: InstalledModel,
    settings: GenerationSettings,
    keep_alive: float | None,
) -> None:
    """An empty prompt loads the model (or, with keep_alive 0, unloads it), as in Ollama."""
    if keep_alive == 0:
        state.scheduler.unload(model.digest)
    else:
        await state.scheduler.preload(model.model_path, model.digest, settings.num_ctx, keep_alive)


def _final_fields(finished: Finished | None, keep_alive: float | None) -> dict[str, object]:
    if finished is None:
        return {"done_reason": "unload" if keep_alive == 0 else "load"}
    return dataclasses.asdict(finished)


async def _respond(
    request: web.Request,
    stream: bool,
    pieces: AsyncIterator[str | Finished],
    piece: PieceBody,
    final: FinalBody,
) -> web.StreamResponse:
    if stream:

        async def events() -> AsyncIterator[Wire]:
            async with contextlib.aclosing(pieces):
                async for p in pieces:
                    yield piece(p) if isinstance(p, str) else final(p, "")

        return await stream_ndjson(request, events())
    texts: list[str] = []
    finished: Finished | None = None
    async with contextlib.aclosing(pieces):
        async for p in pieces:
            if isinstance(p, str):
                texts.append(p)
            else:
                finished = p
    return json_response(final(finished, "".join(texts)))
