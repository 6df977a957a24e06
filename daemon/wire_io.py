"""Reading wire requests and writing JSON or NDJSON responses.

A stream's HTTP status is decided by its first event: an error raised before
it (unknown model, a model that fails to load) is answered with the proper
status by the error middleware; an error after it becomes a last
`{"error": ..., "status": ...}` line, as Ollama does (its `status` is corral's: the
status the error would have had, for scripts; Ollama's clients ignore it). A client
that goes away ends the stream, which closes the event source and so cancels its work.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import TypeVar

from aiohttp import web

from corral.client.api import ErrorResponse, ProgressResponse, Wire, WireError
from corral.daemon.errors import error_body

log = logging.getLogger(__name__)

W = TypeVar("W", bound=Wire)
E = TypeVar("E")

NDJSON = "application/x-ndjson"
SUCCESS = "success"  # the last status of a pull or a create


async def read_request(request: web.Request, cls: type[W]) -> W:
    """Decode the body as `cls`; a missing, malformed or mistyped body raises WireError."""
    body = await request.read()
    if not body.strip():
        raise WireError("missing request body: send a JSON object")
    return cls.from_json(body)


def json_response(body: Wire, status: int = 200) -> web.Response:
    return web.Response(status=status, text=body.to_json(), content_type="application/json")


def _line(body: Wire) -> bytes:
    return body.to_json().encode() + b"\n"


async def stream_frames(
    request: web.Request,
    headers: Mapping[str, str],
    events: AsyncIterator[E],
    frames: Callable[[E], Iterable[bytes]],
    error_frame: Callable[[Exception], bytes],
    trailer: bytes = b"",
) -> web.StreamResponse:
    """Send each event as its frames, then `trailer`, closing `events` however the stream
    ends. An error before the first frame is raised (a plain error response); after it, it
    becomes a last error frame. A client that goes away stops the stream."""
    response = web.StreamResponse(headers=headers)
    async with contextlib.aclosing(events):
        try:
            async for event in events:
                if not response.prepared:
                    await response.prepare(request)
                try:
                    for frame in frames(event):
                        await response.write(frame)
                except ConnectionResetError:
                    log.info("%s %s: client went away, stopping", request.method, request.path)
                    return response
        except Exception as e:
            if not response.prepared:
                raise
            with contextlib.suppress(ConnectionResetError):
                await response.write(error_frame(e))
                await response.write_eof()
            return response
    if not response.prepared:
        await response.prepare(request)
    with contextlib.suppress(ConnectionResetError):
        if trailer:
            await response.write(trailer)
        await response.write_eof()
    return response


async def stream_ndjson(request: web.Request, events: AsyncIterator[Wire]) -> web.StreamResponse:
    """Send `events` as NDJSON lines; an error after the first is a last {"error"} line."""
    return await stream_frames(
        request,
        {"Content-Type": NDJSON},
        events,
        lambda event: (_line(event),),
        lambda e: _line(_error_line(e)),
    )


def _error_line(error: Exception) -> ErrorResponse:
    status, message = error_body(error)
    return ErrorResponse(error=message, status=status)


async def answer_progress(
    request: web.Request, events: AsyncIterator[ProgressResponse], stream: bool
) -> web.StreamResponse:
    """A pull's or create's progress: streamed as NDJSON, or (stream false) only its last
    status, {"status": "success"} when it ends well."""
    if stream:
        return await stream_ndjson(request, events)
    last: ProgressResponse | None = None
    async with contextlib.aclosing(events):
        async for last in events:  # noqa: B007 - only the final status is answered
            pass
    return json_response(last or ProgressResponse(status=SUCCESS))
