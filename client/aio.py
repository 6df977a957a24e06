"""`AsyncClient`: the `Client` of client/http.py for asyncio scripts, over aiohttp.

    from corral.client.aio import AsyncClient
    async with AsyncClient() as client:     # the default Unix socket, or CORRAL_HOST
        async for part in await client.generate("smollm2:135m", "Why is the sky blue?"):
            print(part.response, end="", flush=True)

The same methods and arguments as `Client`, awaited; a streaming one returns an
async iterator, as Ollama's AsyncClient does. Leaving the `async with` block (or
`await client.close()`) closes the connections, the open streams' too. Errors are
`Client`'s: ResponseError, StreamCut, DaemonNotRunning (client/errors.py).
"""

from __future__ import annotations

import asyncio
import os
import socket
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Self, TypeVar, overload

import aiohttp

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
from corral.client.errors import DaemonNotRunning, DaemonUnreachable, ResponseError, StreamCut
from corral.client.http import (
    error_message,
    file_digest,
    is_last,
    messages_of,
    options_of,
    stream_item,
)

W = TypeVar("W", bound=Wire)
UPLOAD_CHUNK = 1 << 20


class AsyncClient:
    def __init__(
        self, host: str | None = None, *, timeout: float | None = None, token: str | None = None
    ) -> None:
        """`timeout`: seconds to connect, and to wait for each read; `token` (else
        CORRAL_API_TOKEN) is sent as a bearer token over TCP."""
        self.endpoint = Endpoint.resolve(host)
        self.timeout = timeout
        self.token = token if token is not None else os.environ.get(ENV_API_TOKEN, "")
        self._session: aiohttp.ClientSession | None = None
        # the streams not yet ended, with their responses (an unstarted one holds its own)
        self._streams: weakref.WeakKeyDictionary[
            AsyncGenerator[Any, None], aiohttp.ClientResponse
        ] = weakref.WeakKeyDictionary()

    async def close(self) -> None:
        """Close the connections, which stops the daemon's work on open streams; the
        client stays usable (the next call connects again)."""
        for stream, response in list(self._streams.items()):
            await stream.aclose()
            response.close()
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ----- simple calls ---------------------------------------------------------

    async def version(self) -> str:
        """The daemon's corral version (an Ollama server: the Ollama version)."""
        answer = await self._call("GET", "/api/version", None, VersionResponse)
        return answer.corral or answer.version

    async def list(self) -> ListResponse:
        return await self._call("GET", "/api/tags", None, ListResponse)

    async def show(
        self,
        model: str,
        *,
        verbose: bool = False,
        modelfile_format: str | None = None,
        system: str | None = None,
        options: Options | Mapping[str, Any] | None = None,
    ) -> ShowResponse:
        request = ShowRequest(
            model=model,
            verbose=verbose,
            system=system,
            options=options_of(options),
            modelfile_format=modelfile_format,
        )
        return await self._call("POST", "/api/show", request, ShowResponse)

    async def delete(self, model: str) -> None:
        await self._done(await self._send("DELETE", "/api/delete", DeleteRequest(model=model)))

    async def copy(self, source: str, destination: str) -> None:
        request = CopyRequest(source=source, destination=destination)
        await self._done(await self._send("POST", "/api/copy", request))

    async def ps(self) -> ProcessResponse:
        """The models in memory, most recently used first."""
        return await self._call("GET", "/api/ps", None, ProcessResponse)

    async def embed(
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
        return await self._call("POST", "/api/embed", request, EmbedResponse)

    async def embeddings(
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
        return await self._call("POST", "/api/embeddings", request, EmbeddingsResponse)

    async def blob_exists(self, digest: str) -> bool:
        try:
            await self._done(await self._request("HEAD", f"/api/blobs/{digest}"))
        except ResponseError as e:
            if e.status == 404:
                return False
            raise
        return True

    async def push_blob(self, path: str | Path) -> str:
        """Upload a file as a blob unless the daemon has it; returns its digest."""
        digest = await asyncio.to_thread(file_digest, Path(path))
        if not await self.blob_exists(digest):
            headers = {"Content-Type": "application/octet-stream"}
            body = _file_chunks(Path(path))
            headers["Content-Length"] = str(Path(path).stat().st_size)
            await self._done(await self._request("POST", f"/api/blobs/{digest}", body, headers))
        return digest

    # ----- streaming calls ------------------------------------------------------

    @overload
    async def pull(
        self, model: str, *, stream: Literal[True] = ...
    ) -> AsyncIterator[ProgressResponse]: ...
    @overload
    async def pull(self, model: str, *, stream: Literal[False]) -> ProgressResponse: ...
    @overload
    async def pull(
        self, model: str, *, stream: bool = ...
    ) -> AsyncIterator[ProgressResponse] | ProgressResponse: ...
    async def pull(self, model: str, *, stream: bool = True) -> Any:
        request = PullRequest(model=model, stream=stream)
        return await self._maybe_stream("/api/pull", request, ProgressResponse)

    @overload
    async def create(
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
    ) -> AsyncIterator[ProgressResponse]: ...
    @overload
    async def create(
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
    async def create(
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
    ) -> AsyncIterator[ProgressResponse] | ProgressResponse: ...
    async def create(
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
        """Build a model, as `Client.create`."""
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
        return await self._maybe_stream("/api/create", request, ProgressResponse)

    @overload
    async def generate(
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
    ) -> AsyncIterator[GenerateResponse]: ...
    @overload
    async def generate(
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
    async def generate(
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
    ) -> AsyncIterator[GenerateResponse] | GenerateResponse: ...
    async def generate(
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
        """As `Client.generate`."""
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
        return await self._maybe_stream("/api/generate", request, GenerateResponse)

    @overload
    async def chat(
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
    ) -> AsyncIterator[ChatResponse]: ...
    @overload
    async def chat(
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
    async def chat(
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
    ) -> AsyncIterator[ChatResponse] | ChatResponse: ...
    async def chat(
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
        """As `Client.chat`."""
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
        return await self._maybe_stream("/api/chat", request, ChatResponse)

    # ----- plumbing ---------------------------------------------------------------

    async def _maybe_stream(self, path: str, request: Any, cls: type[W]) -> AsyncIterator[W] | W:
        if request.stream:
            response = await self._send("POST", path, request)
            stream = _lines(response, cls)
            self._streams[stream] = response
            return stream
        return await self._call("POST", path, request, cls)

    async def _call(self, method: str, path: str, body: Wire | None, cls: type[W]) -> W:
        response = await self._send(method, path, body)
        async with response:
            return cls.from_json(await response.read())

    async def _send(self, method: str, path: str, body: Wire | None) -> aiohttp.ClientResponse:
        payload = body.to_json().encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        return await self._request(method, path, payload, headers)

    async def _request(
        self,
        method: str,
        path: str,
        payload: bytes | AsyncIterator[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> aiohttp.ClientResponse:
        """Send one request; raise for a daemon that is not there or answers an error."""
        headers = dict(headers or {})
        if self.token and self.endpoint.socket_path is None:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            response = await self._open().request(method, path, data=payload, headers=headers)
        except aiohttp.ClientConnectorError as e:
            if isinstance(e.os_error, FileNotFoundError | ConnectionRefusedError):
                raise DaemonNotRunning(self.endpoint) from None
            if isinstance(e.os_error, socket.gaierror):  # the host name does not resolve
                reason = e.os_error.strerror or str(e.os_error)
                raise DaemonUnreachable(self.endpoint, reason) from None
            raise
        if response.status >= 400:
            async with response:
                text = await response.read()
            raise ResponseError(response.status, error_message(text, response.reason or ""))
        return response

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = _session(self.endpoint, self.timeout)
        return self._session

    @staticmethod
    async def _done(response: aiohttp.ClientResponse) -> None:
        async with response:
            await response.read()


def _session(endpoint: Endpoint, timeout: float | None) -> aiohttp.ClientSession:
    """A session for the endpoint: its base URL is the daemon, over TCP or the socket."""
    if endpoint.socket_path is not None:
        connector: aiohttp.BaseConnector = aiohttp.UnixConnector(path=str(endpoint.socket_path))
        base = "http://localhost"
    else:
        connector = aiohttp.TCPConnector()
        base = str(endpoint)
    limits = aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)
    return aiohttp.ClientSession(base, connector=connector, timeout=limits)


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with open(path, "rb") as f:
        while chunk := await asyncio.to_thread(f.read, UPLOAD_CHUNK):
            yield chunk


async def _lines(response: aiohttp.ClientResponse, cls: type[W]) -> AsyncGenerator[W, None]:
    """Decode NDJSON lines as they arrive, as `Client`'s streams do."""
    async with response:
        try:
            while line := await response.content.readline():
                if not line.strip():
                    continue
                item = stream_item(line, cls)
                yield item
                if is_last(item):
                    return
        except TimeoutError:
            raise
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError):
            pass  # the connection broke (or the client was closed) mid-answer
        raise StreamCut()
