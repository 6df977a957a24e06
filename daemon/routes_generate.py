"""POST /api/generate and /api/chat: streamed NDJSON or one aggregated JSON answer.

`generate_events` and `chat_events` are the handlers' core: they check the
request, resolve the model (raising with the right status) and return the
answer as native wire events, text pieces then one final `done` event with
the statistics. The handlers send those as NDJSON or `collect` them into one
answer; the OpenAI-compatible routes translate the same events.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from aiohttp import web

from corral.client.api import (
    ChatRequest,
    ChatResponse,
    GenerateRequest,
    GenerateResponse,
    Logprob,
    Message,
    TokenLogprob,
    now_rfc3339,
    parse_duration,
)
from corral.daemon import prompts
from corral.daemon.generation import Finished, generate
from corral.daemon.settings import GenerationSettings, logprobs_wanted, settings_for
from corral.daemon.state import STATE, DaemonState
from corral.daemon.wire_io import json_response, read_request, stream_ndjson
from corral.registry.store import InstalledModel
from corral.runtime import logprobs as runtime
from corral.runtime.engine import Engine, Piece

routes = web.RouteTableDef()

R = TypeVar("R", GenerateResponse, ChatResponse)


@dataclass(frozen=True)
class Shape(Generic[R]):
    """Where an answer event keeps its text, so a stream can be joined into one answer."""

    text_of: Callable[[R], str]
    with_text: Callable[[R, str], R]


GENERATE = Shape[GenerateResponse](
    text_of=lambda r: r.response,
    with_text=lambda r, text: dataclasses.replace(r, response=text),
)
CHAT = Shape[ChatResponse](
    text_of=lambda r: r.message.content,
    with_text=lambda r, text: dataclasses.replace(
        r, message=Message(role="assistant", content=text)
    ),
)


@routes.post("/api/generate")
async def generate_handler(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter_ns()
    req = await read_request(request, GenerateRequest)
    events = await generate_events(request.app[STATE], req, started)
    return await respond(request, req.stream and bool(req.prompt or req.suffix), events, GENERATE)


@routes.post("/api/chat")
async def chat_handler(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter_ns()
    req = await read_request(request, ChatRequest)
    events = await chat_events(request.app[STATE], req, started)
    return await respond(request, req.stream and bool(req.messages), events, CHAT)


async def generate_events(
    state: DaemonState, req: GenerateRequest, started: int
) -> AsyncIterator[GenerateResponse]:
    """/api/generate's answer; an empty prompt loads (or with keep_alive 0 unloads) the model.
    With a `suffix` it fills in the middle between the prompt and the suffix."""
    prompts.refuse_unsupported(req)
    model, settings, keep_alive = await _prepare(state, req)

    def piece(p: Piece) -> GenerateResponse:
        return GenerateResponse(
            model=req.model,
            created_at=now_rfc3339(),
            response=p.text,
            logprobs=wire_logprobs(p.logprobs),
        )

    def final(finished: Finished | None) -> GenerateResponse:
        return GenerateResponse(
            model=req.model,
            created_at=now_rfc3339(),
            done=True,
            context=finished.context if finished and not req.raw else None,  # as Ollama
            **_final_fields(finished, keep_alive),
        )

    if not req.prompt and not req.suffix:
        await _load_or_unload(state, model, settings, keep_alive)
        return _one(final(None))
    conversation = prompts.generate_conversation(req, model.manifest)

    def prompt_ids(engine: Engine) -> list[int]:
        if req.suffix:
            template = prompts.go_template(req.template or model.manifest.template or "")
            if template is not None and template.uses_suffix:  # Ollama's way to insert
                return prompts.encode(engine, template.render_infill(req.prompt, req.suffix))
            return prompts.infill(engine, model.name, req.prompt, req.suffix)
        if req.raw:
            return prompts.encode(engine, req.prompt)
        text = prompts.render(engine, model.manifest, conversation, req.template)
        if req.context:
            return prompts.continue_context(engine, req.context, text)
        return prompts.encode(engine, text)

    pieces = generate(state, model, settings, keep_alive, prompt_ids, started)
    return _answer(pieces, piece, final)


async def chat_events(
    state: DaemonState, req: ChatRequest, started: int
) -> AsyncIterator[ChatResponse]:
    """/api/chat's answer; no messages loads (or with keep_alive 0 unloads) the model."""
    prompts.refuse_unsupported(req)
    model, settings, keep_alive = await _prepare(state, req)

    def piece(p: Piece) -> ChatResponse:
        return ChatResponse(
            model=req.model,
            created_at=now_rfc3339(),
            message=Message(role="assistant", content=p.text),
            logprobs=wire_logprobs(p.logprobs),
        )

    def final(finished: Finished | None) -> ChatResponse:
        return ChatResponse(
            model=req.model,
            created_at=now_rfc3339(),
            done=True,
            message=Message(role="assistant", content=""),
            **_final_fields(finished, keep_alive),
        )

    if not req.messages:
        await _load_or_unload(state, model, settings, keep_alive)
        return _one(final(None))
    conversation = prompts.chat_conversation(req.messages, model.manifest)

    def prompt_ids(engine: Engine) -> list[int]:
        return prompts.chat_prompt(engine, model.manifest, conversation, req.truncate is not False)

    pieces = generate(state, model, settings, keep_alive, prompt_ids, started)
    return _answer(pieces, piece, final)


async def respond(
    request: web.Request, stream: bool, events: AsyncIterator[R], shape: Shape[R]
) -> web.StreamResponse:
    if stream:
        return await stream_ndjson(request, events)
    return json_response(await collect(events, shape))


async def collect(events: AsyncIterator[R], shape: Shape[R]) -> R:
    """The final event, carrying the text of every piece before it."""
    texts: list[str] = []
    logprobs: list[Logprob] = []
    final: R | None = None
    async with contextlib.aclosing(events):
        async for event in events:
            if event.done:
                final = event
            else:
                texts.append(shape.text_of(event))
                logprobs += event.logprobs or ()
    if final is None:
        raise RuntimeError("the answer ended without its final event")
    final = dataclasses.replace(final, logprobs=tuple(logprobs) or None)
    return shape.with_text(final, "".join(texts))


async def _prepare(
    state: DaemonState, req: GenerateRequest | ChatRequest
) -> tuple[InstalledModel, GenerationSettings, float | None]:
    model = await state.resolve(req.model)
    settings = settings_for(req.options, model.manifest, state.config.num_ctx)
    logprobs = logprobs_wanted(req.logprobs, req.top_logprobs)
    settings = dataclasses.replace(settings, logprobs=logprobs)
    keep_alive = None if req.keep_alive is None else parse_duration(req.keep_alive)
    return model, settings, keep_alive


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
        await state.scheduler.preload(
            model.model_path, model.digest, settings.num_ctx, keep_alive, name=model.name
        )


def _final_fields(finished: Finished | None, keep_alive: float | None) -> dict[str, Any]:
    if finished is None:
        return {"done_reason": "unload" if keep_alive == 0 else "load"}
    fields = dataclasses.asdict(finished)
    del fields["context"]  # only /api/generate answers with it
    return fields


async def _one(event: R) -> AsyncIterator[R]:
    yield event


async def _answer(
    pieces: AsyncIterator[Piece | Finished],
    piece: Callable[[Piece], R],
    final: Callable[[Finished], R],
) -> AsyncIterator[R]:
    async with contextlib.aclosing(pieces):
        async for p in pieces:
            yield piece(p) if isinstance(p, Piece) else final(p)


def wire_logprobs(logprobs: tuple[runtime.Logprob, ...]) -> tuple[Logprob, ...] | None:
    """The runtime's log probabilities of a piece's tokens as Ollama sends them."""
    if not logprobs:
        return None
    return tuple(
        Logprob(
            token=lp.chosen.token,
            logprob=lp.chosen.logprob,
            bytes=tuple(lp.chosen.token_bytes),
            top_logprobs=tuple(
                TokenLogprob(token=t.token, logprob=t.logprob, bytes=tuple(t.token_bytes))
                for t in lp.top
            )
            or None,
        )
        for lp in logprobs
    )
