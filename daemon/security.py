"""Who may talk to the daemon: API token, DNS-rebinding and browser-origin checks.

- Unix socket: its mode (0600, in a 0700 folder) is the access control; no token.
- TCP with CORRAL_API_TOKEN set: every request sends `Authorization: Bearer <token>`,
  else 401. (A non-loopback CORRAL_HOST refuses to start without a token: config.py.)
- TCP on a loopback address: the Host header must name this machine (localhost,
  a loopback or private address, the host name, *.localhost/.local/.internal),
  so a web page whose DNS name was rebound to 127.0.0.1 cannot reach the
  daemon, as Ollama checks.
- Any transport: a browser request (an Origin header) from an origin that is
  neither local (localhost, 127.0.0.1, [::1], 0.0.0.0, app/file/tauri/vscode
  schemes) nor in CORRAL_ORIGINS is refused with 403. Allowed origins get CORS
  headers, and their preflight OPTIONS requests are answered here.
- Files on this machine: only requests over the Unix socket (this user's own
  programs) may pull or create from a local path or read a Modelfile by path. Over
  TCP that is 403: anyone who reaches the port, other local users included, could
  otherwise make the daemon read this user's files. TCP clients upload a GGUF with
  POST /api/blobs and create from its digest, as Ollama's do.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
import socket
from collections.abc import Iterable

from aiohttp import web
from aiohttp.typedefs import Middleware

from corral.daemon.config import ENV_ORIGINS, ENV_TOKEN, DaemonConfig, is_loopback
from corral.daemon.errors import Handler, RequestError
from corral.daemon.openai_io import error_for
from corral.registry.sources import is_local_source

LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]", "0.0.0.0")
LOCAL_ORIGINS = (
    *(
        f"{scheme}://{host}{port}"
        for scheme in ("http", "https")
        for host in LOCAL_HOSTS
        for port in ("", ":*")
    ),
    *(f"{scheme}://*" for scheme in ("app", "file", "tauri", "vscode-webview", "vscode-file")),
)
LOCAL_SUFFIXES = (".localhost", ".local", ".internal")
ALLOWED_METHODS = "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"
PREFLIGHT_MAX_AGE = "86400"
ORIGIN_CHECKED = web.RequestKey("corral_origin_allowed", str)


def install(app: web.Application, config: DaemonConfig) -> None:
    """Put the checks in front of every other middleware and add CORS headers."""
    patterns = origin_patterns((*LOCAL_ORIGINS, *config.origins))
    app.middlewares.insert(0, _middleware(config, patterns))
    app.on_response_prepare.append(_add_cors_headers)


def origin_patterns(origins: Iterable[str]) -> tuple[re.Pattern[str], ...]:
    """`*` matches one run of host-name characters: never a '/', ':' or '@'."""
    return tuple(
        re.compile(".*" if o == "*" else re.escape(o.lower()).replace(r"\*", r"[a-z0-9._-]*"))
        for o in origins
    )


def origin_allowed(origin: str, patterns: Iterable[re.Pattern[str]]) -> bool:
    value = origin.strip().lower()
    return any(p.fullmatch(value) for p in patterns)


def host_allowed(host_header: str) -> bool:
    """Does the Host header name this machine (not a DNS name rebound to it)?"""
    host = host_header.strip().lower()
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    if host in ("", "localhost", socket.gethostname().lower()):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host.endswith(LOCAL_SUFFIXES)
    return address.is_loopback or address.is_private or address.is_unspecified


def over_tcp(request: web.Request) -> bool:
    """False for the Unix socket; anything we cannot tell is treated as TCP."""
    transport = request.transport
    return transport is None or not isinstance(transport.get_extra_info("sockname"), str)


LOCAL_FILES_REFUSED = (
    "{what} '{spec}' is a file on the daemon's machine, which only its Unix socket may "
    "name (the corral CLI there); over TCP, upload the GGUF with POST /api/blobs/<digest> "
    "and create the model from it ('files')"
)


def refuse_local_files(request: web.Request, what: str, *specs: str | None) -> None:
    """403 for a TCP request naming a local file or folder in any of `specs`."""
    if not over_tcp(request):
        return
    for spec in specs:
        if spec and is_local_source(spec):
            raise RequestError(LOCAL_FILES_REFUSED.format(what=what, spec=spec[:200]), 403)


def token_matches(request: web.Request, token: str) -> bool:
    """Bytes that are not UTF-8 reach us as surrogates (aiohttp's surrogateescape): they are
    compared as the bytes sent, so they are a wrong token, not an encoding error (a 500)."""
    scheme, _, given = request.headers.get("Authorization", "").strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode("utf-8", "surrogateescape"), token.encode()
    )


def _middleware(config: DaemonConfig, patterns: tuple[re.Pattern[str], ...]) -> Middleware:
    check_host = config.host is not None and is_loopback(config.host[0])

    @web.middleware
    async def security(request: web.Request, handler: Handler) -> web.StreamResponse:
        tcp = over_tcp(request)
        if tcp and check_host and not host_allowed(request.host):
            return error_for(request, 403, f"host '{request.host}' is not allowed: use localhost")
        origin = request.headers.get("Origin")
        if origin is not None:
            if not origin_allowed(origin, patterns):
                return error_for(
                    request,
                    403,
                    f"origin '{origin}' is not allowed: add it to {ENV_ORIGINS} to allow it",
                )
            request[ORIGIN_CHECKED] = origin
            if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
                return _preflight(request)
        if tcp and config.api_token and not token_matches(request, config.api_token):
            response = error_for(
                request,
                401,
                f"missing or wrong API token: send 'Authorization: Bearer <{ENV_TOKEN}>'",
            )
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        return await handler(request)

    return security


def _preflight(request: web.Request) -> web.Response:
    requested = request.headers.get("Access-Control-Request-Headers", "")
    headers = {
        "Access-Control-Allow-Methods": ALLOWED_METHODS,
        "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
    }
    if requested:
        headers["Access-Control-Allow-Headers"] = requested
    return web.Response(status=204, headers=headers)


async def _add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    origin = request.get(ORIGIN_CHECKED)
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers.add("Vary", "Origin")
