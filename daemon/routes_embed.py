"""POST /api/embed (several inputs, L2-normalised) and the older POST /api/embeddings.

`embed_answer` is /api/embed's core; /v1/embeddings translates onto it.
Empty input loads the model and answers with no embeddings, as Ollama does.
"""

from __future__ import annotations

import time

from aiohttp import web

from corral.client.api import (
    EmbeddingsRequest,
    EmbeddingsResponse,
    EmbedRequest,
    EmbedResponse,
    parse_duration,
)
from corral.daemon.embedding import check_dimensions, embed_texts, floats, normalized
from corral.daemon.errors import RequestError
from corral.daemon.settings import settings_for
from corral.daemon.state import STATE, DaemonState
from corral.daemon.wire_io import json_response, read_request

routes = web.RouteTableDef()

# Texts one /api/embed request may hold (OpenAI's limit): 100,000 one-word inputs fit the
# body limit, and their answer would be a JSON document of gigabytes built in memory.
MAX_INPUTS = 2048


@routes.post("/api/embed")
async def embed_handler(request: web.Request) -> web.Response:
    started = time.perf_counter_ns()
    req = await read_request(request, EmbedRequest)
    return json_response(await embed_answer(request.app[STATE], req, started))


@routes.post("/api/embeddings")
async def embeddings_handler(request: web.Request) -> web.Response:
    req = await read_request(request, EmbeddingsRequest)
    state = request.app[STATE]
    model = await state.resolve(req.model)
    settings = settings_for(req.options, model.manifest, state.config.num_ctx)
    keep_alive = None if req.keep_alive is None else parse_duration(req.keep_alive)
    if not req.prompt:
        await state.scheduler.preload(
            model.model_path, model.digest, settings.num_ctx, keep_alive, name=model.name
        )
        return json_response(EmbeddingsResponse(embedding=()))
    embedded = await embed_texts(state, model, [req.prompt], settings, keep_alive, truncate=False)
    return json_response(EmbeddingsResponse(embedding=floats(embedded.vectors[0])))


async def embed_answer(state: DaemonState, req: EmbedRequest, started: int) -> EmbedResponse:
    check_dimensions(req.dimensions)
    if len(req.inputs) > MAX_INPUTS:
        raise RequestError(
            f"'input' has {len(req.inputs)} texts, more than the {MAX_INPUTS} one request "
            "may embed: send them in several requests"
        )
    model = await state.resolve(req.model)
    settings = settings_for(req.options, model.manifest, state.config.num_ctx)
    keep_alive = None if req.keep_alive is None else parse_duration(req.keep_alive)
    if not req.inputs:
        load_ns = await state.scheduler.preload(
            model.model_path, model.digest, settings.num_ctx, keep_alive, name=model.name
        )
        return EmbedResponse(model=req.model, embeddings=(), load_duration=load_ns)
    truncate = req.truncate is not False
    embedded = await embed_texts(state, model, req.inputs, settings, keep_alive, truncate=truncate)
    return EmbedResponse(
        model=req.model,
        embeddings=tuple(floats(normalized(v, req.dimensions)) for v in embedded.vectors),
        total_duration=time.perf_counter_ns() - started,
        load_duration=embedded.load_duration,
        prompt_eval_count=embedded.prompt_tokens,
    )
