"""Which exception becomes which HTTP status, and the middleware that applies it.

Every error reaches the client as JSON `{"error": "<one line>"}`. The table is
searched in order, so specific classes come before their bases. Anything not
in it is a bug: logged with its traceback, answered with 500.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from corral.client.api import ErrorResponse, WireError
from corral.registry.errors import (
    CorralError,
    CorruptModel,
    DiskFull,
    InvalidName,
    ModelNotFound,
    PullCancelled,
    SourceError,
    SourceUnreachable,
)
from corral.runtime.arch import UnsupportedArchitecture
from corral.runtime.chat_template import TemplateError
from corral.runtime.gguf import GGUFError
from corral.runtime.gotemplate import GoTemplateError
from corral.runtime.kv_cache import ContextFull

log = logging.getLogger(__name__)

CLIENT_CLOSED = 499  # nginx's status for "the client went away"; never seen by a client


class RequestError(Exception):
    """A request the daemon refuses by itself, with its HTTP status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


STATUS_BY_ERROR: tuple[tuple[type[BaseException], int], ...] = (
    (WireError, 400),  # malformed JSON, wrong field types
    (InvalidName, 400),
    (ContextFull, 400),  # prompt longer than num_ctx
    (ModelNotFound, 404),
    (CorruptModel, 422),  # a file that is not the GGUF it claims to be
    (GGUFError, 422),
    (UnsupportedArchitecture, 422),
    (TemplateError, 422),  # the model's chat template fails to render
    (GoTemplateError, 422),  # ... or its Go template (a Modelfile's, a request's)
    (DiskFull, 507),  # Insufficient Storage: an upload would fill the store's disk
    (PullCancelled, CLIENT_CLOSED),
    (SourceUnreachable, 502),  # a hub or index that cannot be reached right now
    (SourceError, 400),  # a source without the model: unknown package, missing file
    (CorralError, 400),  # any other registry error is about what the user asked
)


def status_for(error: BaseException) -> int | None:
    """The HTTP status for `error`, or None if it is not a known (user) error."""
    if isinstance(error, RequestError):
        return error.status
    return next((status for cls, status in STATUS_BY_ERROR if isinstance(error, cls)), None)


def message_for(error: BaseException) -> str:
    """One line for the user: the exception's own message."""
    text = str(error).strip() or type(error).__name__
    return " ".join(text.splitlines())


def error_body(error: BaseException) -> tuple[int, str]:
    """(status, message) for any exception, logging unexpected ones with their traceback."""
    status = status_for(error)
    if status is None:
        log.error("internal error", exc_info=error)
        return 500, f"internal error: {message_for(error)} (see the daemon log)"
    return status, message_for(error)


def json_error(status: int, message: str) -> web.Response:
    return web.Response(
        status=status,
        text=ErrorResponse(error=message).to_json(),
        content_type="application/json",
    )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn exceptions into JSON errors with the table's status."""
    try:
        return await handler(request)
    except web.HTTPException as e:  # aiohttp's own: unknown route, wrong method
        if e.status < 400:
            raise
        return json_error(e.status, f"{e.reason.lower()}: {request.method} {request.path}")
    except Exception as e:
        status, message = error_body(e)
        return json_error(status, message)
