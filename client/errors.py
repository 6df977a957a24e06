"""What the client raises: the daemon is not there, it answered an error, or its
answer broke off."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from corral.client.endpoint import Endpoint


class DaemonNotRunning(ConnectionError):
    """Nothing answers where the daemon should listen."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        super().__init__(f"corral is not running at {endpoint} (start it with `corral serve`)")


class DaemonUnreachable(ConnectionError):
    """The daemon's host does not resolve (a CORRAL_HOST or `host` that is wrong)."""

    def __init__(self, endpoint: Endpoint, reason: str) -> None:
        self.endpoint = endpoint
        super().__init__(f"cannot reach corral at {endpoint}: {reason} (check CORRAL_HOST)")


class ResponseError(Exception):
    """The daemon answered with an error; `message` is its one-line explanation."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class StreamCut(ResponseError):
    """A stream ended before its last message (done, or "success"): the daemon stopped or
    the connection broke mid-answer. No HTTP status: `status` is -1."""

    def __init__(self) -> None:
        super().__init__(
            -1,
            "the connection to corral closed before the answer was complete "
            "(did the daemon stop? its log says)",
        )
