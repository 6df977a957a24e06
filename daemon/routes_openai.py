"""The OpenAI-compatible API: /v1/chat/completions, /v1/completions, /v1/embeddings,
/v1/models and /v1/models/{model}.

Each handler translates its request onto the native handlers' core
(routes_generate, routes_embed) and the native answer back
(openai_translate.py); nothing here generates or embeds on its own.
"""

from __future__ import annotations

import asyncio
import base64
import time

import numpy as np
from aiohttp import web

from corral.client.api import EmbedRequest
from corral.client.api import openai_bodies as oai
from corral.daemon import openai_translate as translate
from corral.daemon.openai_io import stream_sse
from corral.daemon.routes_embed import embed_answer
from corral.daemon.routes_generate import CHAT, GENERATE, chat_events, collect, generate_events
from corral.daemon.state import STATE
from corral.daemon.wire_io import json_response, read_request
from corral.registry.names import ModelName
from corral.registry.store import InstalledModel

routes = web.RouteTableDef()


@routes.post("/v1/chat/completions")
async def chat_completions_handler(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter_ns()
    req = await read_request(request, oai.ChatCompletionRequest)
    events = await chat_events(request.app[STATE], translate.chat_request(req), started)
    if req.stream:
        chunks = translate.ChatChunks(req.model, _include_usage(req))
        return await stream_sse(request, events, chunks)
    final = await collect(events, CHAT)
    return json_response(translate.chat_completion(translate.new_id("chatcmpl"), req.model, final))


@routes.post("/v1/completions")
async def completions_handler(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter_ns()
    req = await read_request(request, oai.CompletionRequest)
    events = await generate_events(request.app[STATE], translate.completion_request(req), started)
    if req.stream:
        chunks = translate.CompletionChunks(req.model, _include_usage(req))
        return await stream_sse(request, events, chunks)
    final = await collect(events, GENERATE)
    return json_response(translate.completion(translate.new_id("cmpl"), req.model, final))


@routes.post("/v1/embeddings")
async def embeddings_handler(request: web.Request) -> web.Response:
    started = time.perf_counter_ns()
    req = await read_request(request, oai.EmbeddingRequest)
    native = EmbedRequest(
        model=req.model, input=translate.embed_inputs(req), dimensions=req.dimensions
    )
    answer = await embed_answer(request.app[STATE], native, started)
    encode = _base64 if req.encoding_format == "base64" else tuple
    data = tuple(
        oai.Embedding(embedding=encode(vector), index=i)
        for i, vector in enumerate(answer.embeddings)
    )
    tokens = answer.prompt_eval_count or 0
    return json_response(
        oai.EmbeddingList(
            data=data,
            model=req.model,
            usage=oai.EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
        )
    )


@routes.get("/v1/models")
async def models_handler(request: web.Request) -> web.Response:
    models = await asyncio.to_thread(request.app[STATE].store.list)
    return json_response(oai.ModelList(data=tuple(_card(m) for m in models)))


@routes.get("/v1/models/{model:.+}")
async def model_handler(request: web.Request) -> web.Response:
    model = await request.app[STATE].resolve(request.match_info["model"])
    return json_response(_card(model))


def _card(model: InstalledModel) -> oai.ModelCard:
    return oai.ModelCard(
        id=model.name,
        created=int(model.modified_at.timestamp()),
        owned_by=ModelName.parse(model.name).namespace,
    )


def _include_usage(req: oai.Sampling) -> bool:
    return req.stream_options is not None and req.stream_options.include_usage


def _base64(vector: tuple[float, ...]) -> str:
    """OpenAI's base64 encoding: the little-endian float32 bytes."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
