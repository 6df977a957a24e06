"""`Client`: a small synchronous client of the corral daemon, for the CLI and for scripts.

    from corral.client.http import Client
    client = Client()                       # the default Unix socket, or CORRAL_HOST
    for part in client.generate("smollm2:135m", "Why is the sky blue?"):
        print(part.response, end="", flush=True)

Streaming methods return an iterator of wire responses; closing it (or
stopping early) closes the connection, which stops the daemon's work;
`client.close()`, or leaving `with Client() as client:`, closes those still open.
With `stream=False` they return the one aggregated response. HTTP errors
raise `ResponseError` (an error mid-stream with the status the daemon gives it);
a stream cut before its end `StreamCut`; nothing listening raises
`DaemonNotRunning` (client/errors.py).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import weakref
from collections.abc import Generator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Literal, Self, TypeVar, overload

from corral.client.api import (
    ENV_API_TOKEN,
    ChatRequest,
    ChatResponse,
    CopyRequest,
    CreateRequest,
    DeleteRequest,
    EmbeddingsRequest,
    EmbeddingsResponse,
    EmbedRequest,
    EmbedResponse,
    GenerateRequest,
    GenerateResponse,
    ListResponse,
    Message,
    Options,
    ProcessResponse,
    ProgressResponse,
    PullRequest,
    ShowRequest,
    ShowResponse,
    VersionResponse,
    Wire,
)
from corral.client.endpoint import Endpoint
from corral.client.endpoint import UnixHTTPConnection as UnixHTTPConnection  # re-exported
from corral.client.errors import DaemonNotRunning as DaemonNotRunning  # re-exported
from corral.client.errors import DaemonUnreachable as DaemonUnreachable
from corral.client.errors import ResponseError as ResponseError
from corral.client.errors import StreamCut as StreamCut

W = TypeVar("W", bound=Wire)
PING_TIMEOUT = 2.0
HASH_CHUNK = 1 << 20
_Open = tuple[http.client.HTTPConnection, http.client.HTTPResponse]
STREAM_ERROR_STATUS = 500  # an {"error"} line after a 200 that names no status (Ollama's)


class Client:
    def __init__(
        self, host: str | None = None, *, timeout: float | None = None, token: str | None = None
    ) -> None:
        """`token` (else CORRAL_API_TOKEN) is sent as a bearer token over TCP."""
        self.endpoint = Endpoint.resolve(host)
        self.timeout = timeout
        self.token = token if token is not None else os.environ.get(ENV_API_TOKEN, "")
        # the streams not yet ended, with their connections (each call opens its own)
        self._streams: weakref.WeakKeyDictionary[Generator[Any, None, None], _Open] = (
            weakref.WeakKeyDictionary()
        )

    def close(self) -> None:
        """Close the streams still open, which stops the daemon's work on them; the client
        itself stays usable (every call opens its own connection)."""
        for stream, (conn, response) in list(self._streams.items()):
            stream.close()
            response.close()
            conn.close()
        self._streams.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- simple calls ---------------------------------------------------------

    def ping(self) -> None:
        """Raise DaemonNotRunning unless the daemon answers."""
        self._close(*self._send("HEAD", "/", None, timeout=PING_TIMEOUT))

    def is_running(self) -> bool:
        """Whether a daemon answers; one refusing us (a wrong API token: 401) does."""
        try:
            self.ping()
        except ResponseError:
            return True
        except DaemonUnreachable:  # a host that does not resolve: not a daemon to start
            raise
        except (DaemonNotRunning, OSError, http.client.HTTPException):
            return False
        return True

    def version(self) -> str:
        """The daemon's corral version (an Ollama server: the Ollama version)."""
        answer = self._call("GET", "/api/version", None, VersionResponse)
        return answer.corral or answer.version

    def list(self) -> ListResponse:
        return self._call("GET", "/api/tags", None, ListResponse)

    def show(
        self,
        model: str,
        *,
        verbose: bool = False,
        modelfile_format: str | None = None,
        system: str | None = None,
        options: Options | Mapping[str, Any] | None = None,
    ) -> ShowResponse:
        """`modelfile_format="yaml"`: the answer's `modelfile` in corral's YAML; `system`
        and `options` are shown in place of the model's own (a chat's settings)."""
        request = ShowRequest(
            model=model,
            verbose=verbose,
            system=system,
            options=options_of(options),
            modelfile_format=modelfile_format,
        )
        return self._call("POST", "/api/show", request, ShowResponse)

    def delete(self, model: str) -> None:
        self._close(*self._send("DELETE", "/api/delete", DeleteRequest(model=model)))

    def copy(self, source: str, destination: str) -> None:
        request = CopyRequest(source=source, destination=destination)
        self._close(*self._send("POST", "/api/copy", request))

    def ps(self) -> ProcessResponse:
        """The models in memory, most recently used first."""
        return self._call("GET", "/api/ps", None, ProcessResponse)

    def embed(
        self,
        model: str,
        input: str | Sequence[str],
        *,
        truncate: bool | None = None,
        dimensions: int | None = None,
        options: Options | Mapping[str, Any] | None = None,
        keep_alive: str | float | None = None,
    ) -> EmbedResponse:
        """L2-normalised embeddings, one per input."""
        request = EmbedRequest(
            model=model,
            input=input if isinstance(input, str) else tuple(input),
            truncate=truncate,
            dimensions=dimensions,
            options=options_of(options),
            keep_alive=keep_alive,
        )
        return self._call("POST", "/api/embed", request, EmbedResponse)

    def embeddings(
        self,
        model: str,
        prompt: str,
        *,
        options: Options | Mapping[str, Any] | None = None,
        keep_alive: str | float | None = None,
    ) -> EmbeddingsResponse:
        """One embedding, not normalised (the older endpoint)."""
        request = EmbeddingsRequest(
            model=model, prompt=prompt, options=options_of(options), keep_alive=keep_alive
        )
        return self._call("POST", "/api/embeddings", request, EmbeddingsResponse)

    def blob_exists(self, digest: str) -> bool:
        try:
            self._close(*self._send_raw("HEAD", f"/api/blobs/{digest}"))
        except ResponseError as e:
            if e.status == 404:
                return False
            raise
        return True

    def push_blob(self, path: str | Path) -> str:
        """Upload a file as a blob unless the daemon has it; returns its digest."""
        digest = file_digest(Path(path))
        if not self.blob_exists(digest):
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
                self._close(*self._send_raw("POST", f"/api/blobs/{digest}", f, headers))
        return digest

    # ----- streaming calls ------------------------------------------------------

    @overload
    def pull(self, model: str, *, stream: Literal[True] = ...) -> Iterator[ProgressResponse]: ...
    @overload
    def pull(self, model: str, *, stream: Literal[False]) -> ProgressResponse: ...
    @overload
    def pull(
        self, model: str, *, stream: bool = ...
    ) -> Iterator[ProgressResponse] | ProgressResponse: ...
    def pull(self, model: str, *, stream: bool = True) -> Any:
        request = PullRequest(model=model, stream=stream)
        return self._maybe_stream("/api/pull", request, ProgressResponse)

    @overload
    def create(
        self,
        model: str,
        *,
        from_: str | None = ...,
        files: Mapping[str, str] | None = ...,
        quantize: str | None = ...,
        template: str | None = ...,
        system: str | None = ...,
        parameters: Mapping[str, Any] | None = ...,
        messages: Sequence[Message | Mapping[str, Any]] | None = ...,
        license: str | Sequence[str] | None = ...,
        modelfile: str | None = ...,
        path: str | None = ...,
        stream: Literal[True] = ...,
    ) -> Iterator[ProgressResponse]: ...
    @overload
    def create(
        self,
        model: str,
        *,
        from_: str | None = ...,
        files: Mapping[str, str] | None = ...,
        quantize: str | None = ...,
        template: str | None = ...,
        system: str | None = ...,
        parameters: Mapping[str, Any] | None = ...,
        messages: Sequence[Message | Mapping[str, Any]] | None = ...,
        license: str | Sequence[str] | None = ...,
        modelfile: str | None = ...,
        path: str | None = ...,
        stream: Literal[False],
    ) -> ProgressResponse: ...
    @overload
    def create(
        self,
        model: str,
        *,
        from_: str | None = ...,
        files: Mapping[str, str] | None = ...,
        quantize: str | None = ...,
        template: str | None = ...,
        system: str | None = ...,
        parameters: Mapping[str, Any] | None = ...,
        messages: Sequence[Message | Mapping[str, Any]] | None = ...,
        license: str | Sequence[str] | None = ...,
        modelfile: str | None = ...,
        path: str | None = ...,
        stream: bool = ...,
    ) -> Iterator[ProgressResponse] | ProgressResponse: ...
    def create(
        self,
        model: str,
        *,
        from_: str | None = None,
        files: Mapping[str, str] | None = None,
        quantize: str | None = None,
        template: str | None = None,
        system: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        messages: Sequence[Message | Mapping[str, Any]] | None = None,
        license: str | Sequence[str] | None = None,
        modelfile: str | None = None,
        path: str | None = None,
        stream: bool = True,
    ) -> Any:
        """Build a model `from_` a base (Ollama's /api/create): progress events, or the last
        one with `stream=False`. `modelfile` is a Modelfile's text (YAML or Ollama's syntax),
        `path` where it lives (relative paths in FROM are taken from its folder)."""
        request = CreateRequest(
            model=model,
            from_=from_,
            files=dict(files) if files else None,
            quantize=quantize,
            template=template,
            system=system,
            parameters=dict(parameters) if parameters is not None else None,
            messages=None if messages is None else messages_of(messages),
            license=license if license is None or isinstance(license, str) else tuple(license),
            modelfile=modelfile,
            path=path,
            stream=stream,
        )
        return self._maybe_stream("/api/create", request, ProgressResponse)

    @overload
    def generate(
        self,
        model: str,
        prompt: str = ...,
        *,
        stream: Literal[True] = ...,
        system: str | None = ...,
        raw: bool = ...,
        context: Sequence[int] | None = ...,
        options: Options | Mapping[str, Any] | None = ...,
        keep_alive: str | float | None = ...,
        suffix: str | None = ...,
        template: str | None = ...,
        logprobs: bool | None = ...,
        top_logprobs: int | None = ...,
    ) -> Iterator[GenerateResponse]: ...
    @overload
    def generate(
        self,
        model: str,
        prompt: str = ...,
        *,
        stream: Literal[False],
        system: str | None = ...,
        raw: bool = ...,
        context: Sequence[int] | None = ...,
        options: Options | Mapping[str, Any] | None = ...,
        keep_alive: str | float | None = ...,
        suffix: str | None = ...,
        template: str | None = ...,
        logprobs: bool | None = ...,
        top_logprobs: int | None = ...,
    ) -> GenerateResponse: ...
    @overload
    def generate(
        self,
        model: str,
        prompt: str = ...,
        *,
        stream: bool = ...,
        system: str | None = ...,
        raw: bool = ...,
        context: Sequence[int] | None = ...,
        options: Options | Mapping[str, Any] | None = ...,
        keep_alive: str | float | None = ...,
        suffix: str | None = ...,
        template: str | None = ...,
        logprobs: bool | None = ...,
        top_logprobs: int | None = ...,
    ) -> Iterator[GenerateResponse] | GenerateResponse: ...
    def generate(
        self,
        model: str,
        prompt: str = "",
        *,
        stream: bool = True,
        system: str | None = None,
        raw: bool = False,
        context: Sequence[int] | None = None,
        options: Options | Mapping[str, Any] | None = None,
        keep_alive: str | float | None = None,
        suffix: str | None = None,
        template: str | None = None,
        logprobs: bool | None = None,
        top_logprobs: int | None = None,
    ) -> Any:
        """`logprobs`: each token's log probability, with `top_logprobs` (0-20) of the
        most likely ones."""
        request = GenerateRequest(
            model=model,
            prompt=prompt,
            suffix=suffix,
            system=system,
            template=template,
            raw=raw,
            context=None if context is None else tuple(context),
            stream=stream,
            logprobs=logprobs,
            top_logprobs=top_logprobs,
            options=options_of(options),
            keep_alive=keep_alive,
        )
        return self._maybe_stream("/api/generate", request, GenerateResponse)

    @overload
    def chat(
        self,
        model: str,
        messages: Sequence[Message | Mapping[str, Any]] = ...,
        *,
        stream: Literal[True] = ...,
        options: Options | Mapping[str, Any] | None = ...,
        keep_alive: str | float | None = ...,
        logprobs: bool | None = ...,
        top_logprobs: int | None = ...,
        truncate: bool | None = ...,
    ) -> Iterator[ChatResponse]: ...
    @overload
    def chat(
        self,
        model: str,
        messages: Sequence[Message | Mapping[str, Any]] = ...,
        *,
        stream: Literal[False],
        options: Options | Mapping[str, Any] | None = ...,
        keep_alive: str | float | None = ...,
        logprobs: bool | None = ...,
        top_logprobs: int | None = ...,
        truncate: bool | None = ...,
    ) -> ChatResponse: ...
    @overload
    def chat(
        self,
        model: str,
        messages: Sequence[Message | Mapping[str, Any]] = ...,
        *,
        stream: bool = ...,
        options: Options | Mapping[str, Any] | None = ...,
        keep_alive: str | float | None = ...,
        logprobs: bool | None = ...,
        top_logprobs: int | None = ...,
        truncate: bool | None = ...,
    ) -> Iterator[ChatResponse] | ChatResponse: ...
    def chat(
        self,
        model: str,
        messages: Sequence[Message | Mapping[str, Any]] = (),
        *,
        stream: bool = True,
        options: Options | Mapping[str, Any] | None = None,
        keep_alive: str | float | None = None,
        logprobs: bool | None = None,
        top_logprobs: int | None = None,
        truncate: bool | None = None,
    ) -> Any:
        """`truncate=False`: a chat longer than the context window is refused (400)
        rather than losing its oldest messages; `logprobs` as in generate."""
        request = ChatRequest(
            model=model,
            messages=messages_of(messages),
            stream=stream,
            logprobs=logprobs,
            top_logprobs=top_logprobs,
            options=options_of(options),
            keep_alive=keep_alive,
            truncate=truncate,
        )
        return self._maybe_stream("/api/chat", request, ChatResponse)

    # ----- plumbing ---------------------------------------------------------------

    def _maybe_stream(self, path: str, request: Any, cls: type[W]) -> Iterator[W] | W:
        if request.stream:
            conn, response = self._send("POST", path, request)
            stream = _lines(conn, response, cls)
            self._streams[stream] = (conn, response)
            return stream
        return self._call("POST", path, request, cls)

    def _call(self, method: str, path: str, body: Wire | None, cls: type[W]) -> W:
        conn, response = self._send(method, path, body)
        try:
            return cls.from_json(response.read())
        finally:
            conn.close()

    def _send(
        self, method: str, path: str, body: Wire | None, timeout: float | None = None
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send one request; raise for a daemon that is not there or answers an error."""
        payload = body.to_json().encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        return self._send_raw(method, path, payload, headers, timeout)

    def _send_raw(
        self,
        method: str,
        path: str,
        payload: bytes | BinaryIO | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        conn = self.endpoint.connection(timeout if timeout is not None else self.timeout)
        headers = dict(headers or {})
        if self.token and self.endpoint.socket_path is None:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
        except (FileNotFoundError, ConnectionRefusedError):
            conn.close()
            raise DaemonNotRunning(self.endpoint) from None
        except socket.gaierror as e:  # the host name does not resolve
            conn.close()
            raise DaemonUnreachable(self.endpoint, e.strerror or str(e)) from None
        except BaseException:
            conn.close()
            raise
        if response.status >= 400:
            text = response.read()
            conn.close()
            raise ResponseError(response.status, error_message(text, response.reason))
        return conn, response

    @staticmethod
    def _close(conn: http.client.HTTPConnection, response: http.client.HTTPResponse) -> None:
        response.read()
        conn.close()


def options_of(options: Options | Mapping[str, Any] | None) -> Options | None:
    if options is None or isinstance(options, Options):
        return options
    return Options.from_dict(dict(options))


def messages_of(messages: Sequence[Message | Mapping[str, Any]]) -> tuple[Message, ...]:
    return tuple(m if isinstance(m, Message) else Message.from_dict(m) for m in messages)


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return f"sha256:{h.hexdigest()}"


def error_message(body: bytes, reason: str) -> str:
    try:
        message = json.loads(body).get("error")
    except (ValueError, AttributeError):
        message = None
    return str(message) if message else (body.decode(errors="replace").strip() or reason)


def _lines(
    conn: http.client.HTTPConnection, response: http.client.HTTPResponse, cls: type[W]
) -> Generator[W, None, None]:
    """Decode NDJSON lines as they arrive; an {"error"} line raises ResponseError, and a
    stream that ends before its last message (`done`, or status "success") StreamCut."""
    try:
        while line := response.readline():
            if not line.strip():
                continue
            item = stream_item(line, cls)
            yield item
            if is_last(item):
                return
        raise StreamCut()
    finally:
        conn.close()


def stream_item(line: bytes, cls: type[W]) -> W:
    """One NDJSON line of a stream; an {"error"} line raises ResponseError."""
    data = json.loads(line)
    if isinstance(data, dict) and "error" in data:
        status = data.get("status")
        status = status if isinstance(status, int) else STREAM_ERROR_STATUS
        raise ResponseError(status, str(data["error"]))
    return cls.from_dict(data)


def is_last(item: Wire) -> bool:
    """Whether a stream ends with this message (`done`, or status "success")."""
    return getattr(item, "done", False) is True or getattr(item, "status", "") == "success"
