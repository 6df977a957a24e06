"""OpenAI's error shape for /v1 and its server-sent-event streams.

Errors under /v1/ are answered as OpenAI answers them,
`{"error": {"message", "type", "param", "code"}}`, with the status the native
table gives (errors.py): OpenAI's clients raise BadRequestError for 400,
NotFoundError for 404, and so on. A stream is `data: {json}` events ending
with `data: [DONE]`; an error after the first event is a last
`data: {"error": {...}}` event, which OpenAI's clients raise.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable
from typing import TypeVar

from aiohttp import web

from corral.client.api import Wire
from corral.client.api.openai_bodies import ErrorDetail, OpenAIErrorResponse
from corral.daemon.errors import Handler, error_body, json_error
from corral.daemon.wire_io import stream_frames
from corral.registry.errors import ModelNotFound

log = logging.getLogger(__name__)

E = TypeVar("E")

PREFIX = "/v1/"
DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}
SERVER_ERROR = "api_error"
# exception class -> OpenAI's `code`
ERROR_CODES: tuple[tuple[type[BaseException], str], ...] = ((ModelNotFound, "model_not_found"),)


def detail_of(error: BaseException) -> tuple[int, ErrorDetail]:
    """(status, OpenAI error body) for any exception; unexpected ones are logged."""
    status, message = error_body(error)
    code = next((c for cls, c in ERROR_CODES if isinstance(error, cls)), None)
    return status, ErrorDetail(
        message=message,
        type=ERROR_TYPES.get(status, SERVER_ERROR),
        param=getattr(error, "param", None),
        code=code,
    )


def error_for(request: web.Request, status: int, message: str) -> web.Response:
    """An error answer in the shape the request's API uses: OpenAI's under /v1/."""
    if not request.path.startswith(PREFIX):
        return json_error(status, message)
    return openai_error(
        status, ErrorDetail(message=message, type=ERROR_TYPES.get(status, SERVER_ERROR))
    )


def openai_error(status: int, detail: ErrorDetail) -> web.Response:
    body = OpenAIErrorResponse(error=detail).to_json()
    return web.Response(status=status, text=body, content_type="application/json")


@web.middleware
async def openai_error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Under /v1/, answer errors in OpenAI's shape (the native middleware does the rest)."""
    if not request.path.startswith(PREFIX):
        return await handler(request)
    try:
        return await handler(request)
    except web.HTTPException as e:  # aiohttp's own: unknown route, wrong method
        if e.status < 400:
            raise
        message = f"{e.reason.lower()}: {request.method} {request.path}"
        return openai_error(
            e.status, ErrorDetail(message=message, type=ERROR_TYPES.get(e.status, SERVER_ERROR))
        )
    except Exception as e:
        return openai_error(*detail_of(e))


def _event(body: Wire) -> bytes:
    return b"data: " + body.to_json().encode() + b"\n\n"


async def stream_sse(
    request: web.Request, events: AsyncIterator[E], translate: Callable[[E], Iterable[Wire]]
) -> web.StreamResponse:
    """Send each native event's translation as SSE, then `[DONE]`; closes `events`."""
    return await stream_frames(
        request,
        SSE_HEADERS,
        events,
        lambda event: [_event(body) for body in translate(event)],
        lambda e: _event(OpenAIErrorResponse(error=detail_of(e)[1])),
        trailer=DONE,
    )
