"""Opening URLs with the standard library: http(s) and file://, short timeouts,
credentials from the URL sent as basic auth (and never to another host a
redirect leads to), failures turned into one-line SourceErrors that never show
a password."""

from __future__ import annotations

import base64
import http.client
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from corral.registry.errors import SourceError, SourceUnreachable

USER_AGENT = "corral"


class NotFoundError(SourceError):
    """The server answered 404/410 (or the local file is missing)."""


class RangeNotSatisfiable(SourceError):
    """HTTP 416: a resumed download asked for bytes past the end (it was complete)."""


@dataclass(frozen=True)
class HttpOptions:
    cert: str | None = None  # CA bundle (pip's `cert`)
    timeout: float = 15.0  # seconds for the connection and for each read


def redact(url: str) -> str:
    """The URL without user:password@."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parts._replace(netloc=host))


def open_url(url: str, options: HttpOptions, headers: dict[str, str] | None = None) -> Any:
    """Open `url` for reading; the result has .headers, .status and .geturl()."""
    if url.startswith("file:"):
        return _open_file(url)
    request = _request(url, headers or {})
    opener = urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=_context(options)), SameHostCredentials()
    )
    try:
        return opener.open(request, timeout=options.timeout)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416:
            raise RangeNotSatisfiable(f"{redact(url)}: requested range not satisfiable") from None
        if e.code in (404, 410):
            raise NotFoundError(f"{redact(url)} not found (HTTP {e.code})") from None
        raise SourceError(f"{redact(url)} answered HTTP {e.code} {e.reason}") from None
    except (OSError, http.client.HTTPException) as e:
        raise SourceUnreachable(f"{_host(url)} unreachable ({_reason(e)})") from None
    except ValueError as e:
        raise SourceError(f"cannot open {redact(url)}: {e}") from None


def read_url(url: str, options: HttpOptions, headers: dict[str, str] | None = None) -> bytes:
    """The whole (small) body of `url`, e.g. an index page."""
    with open_url(url, options, headers) as response:
        try:
            return response.read()
        except (OSError, http.client.HTTPException) as e:
            raise SourceUnreachable(f"{_host(url)} unreachable ({_reason(e)})") from None


class SameHostCredentials(urllib.request.HTTPRedirectHandler):
    """Follows redirects, sending the Authorization header only to the host it was
    meant for (as curl and requests do): a hub's token never reaches the storage
    server the hub redirects a download to."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and _origin(newurl) != _origin(req.full_url):
            new.remove_header("Authorization")
        return new


def _origin(url: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme, parts.netloc.rsplit("@", 1)[-1].lower()


def _request(url: str, headers: dict[str, str]) -> urllib.request.Request:
    parts = urllib.parse.urlsplit(url)
    all_headers = {"User-Agent": USER_AGENT, **headers}
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        all_headers["Authorization"] = f"Basic {token}"
        url = redact(url)
    return urllib.request.Request(url, headers=all_headers)


def _context(options: HttpOptions) -> ssl.SSLContext:
    if options.cert and Path(options.cert).is_dir():
        return ssl.create_default_context(capath=options.cert)
    if options.cert:
        return ssl.create_default_context(cafile=options.cert)
    return ssl.create_default_context()


class _FileResponse:
    """A local file presented like an HTTP response (no Range support)."""

    def __init__(self, path: Path, url: str) -> None:
        self._f: IO[bytes] = open(path, "rb")  # noqa: SIM115 - closed by close()/__exit__
        self.status = 200
        self.headers = {"Content-Length": str(path.stat().st_size), "Content-Type": "text/html"}
        self._url = url

    def read(self, n: int = -1) -> bytes:
        return self._f.read(n)

    def geturl(self) -> str:
        return self._url

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> _FileResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open_file(url: str) -> _FileResponse:
    path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path))
    if path.is_dir():
        path = path / "index.html"
        if not url.endswith("/"):
            url += "/"
    if not path.is_file():
        raise NotFoundError(f"{url} not found")
    try:
        return _FileResponse(path, url)
    except OSError as e:
        raise SourceError(f"{url} cannot be read ({e.strerror or e})") from None


def _host(url: str) -> str:
    return urllib.parse.urlsplit(redact(url)).netloc or redact(url)


def _reason(error: BaseException) -> str:
    reason = getattr(error, "reason", error)
    if isinstance(reason, TimeoutError):
        return "timed out"
    if isinstance(reason, socket.gaierror):
        return "name resolution failed"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, ssl.SSLError):
        return f"TLS error: {reason.reason or reason}"
    return str(getattr(reason, "strerror", None) or reason)
