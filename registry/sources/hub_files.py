"""Files of a model hub repository (Hugging Face, ModelScope): what a listing says of each,
and bringing one here, checked.

The bytes are fetched by corral's `download()` into a partial file beside the blobs,
named after the file's hash, so an interrupted download resumes with a `Range` request
across calls and daemon restarts, and two pulls of the same file share it. A file with
a sha256 is verified against it before use (a mismatch deletes the partial file).
Network failures of a hub's own client are recognised by `is_network_error` whatever
the library (httpx, requests, urllib), so a pull can fall over to its next source.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from corral.registry.download import download
from corral.registry.httpio import HttpOptions
from corral.registry.progress import PullProgress, short
from corral.registry.sources.base import FetchContext

_NETWORK_ERRORS = {"TransportError", "TimeoutException", "ConnectionError", "Timeout", "ProxyError"}


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int | None
    sha256: str | None  # LFS files (Hugging Face), every file (ModelScope)
    git_oid: str | None = None  # small files: sha1 of "blob <size>\0" + bytes


@dataclass(frozen=True)
class LocalCopy:
    path: Path  # where the bytes are now (a partial file or the hub client's own cache)
    sha256: str
    from_cache: bool


def download_partial(
    f: RemoteFile,
    url: str,
    ctx: FetchContext,
    *,
    kind: str,
    what: str,
    headers: Mapping[str, str],
    timeout: float,
) -> LocalCopy:
    """Download `url` (file `f`) into the partial file `partial-<kind>-<hash>`, resuming
    what an earlier attempt left there; verified against `f.sha256` when there is one."""
    key = f.sha256 or f.git_oid or sha256_text(what)
    partial = ctx.blobs.partial_path(f"{kind}-{key}")
    digest = f"sha256:{f.sha256}" if f.sha256 else None
    status = f"pulling {short(f.sha256 or key)}"

    def progress(done: int, total: int | None) -> None:
        ctx.progress(PullProgress(status, digest=digest, total=total, completed=done))

    sha = download(
        url,
        partial,
        expected_sha256=f.sha256,
        options=HttpOptions(timeout=timeout),
        progress=progress,
        cancel=ctx.cancel,
        total=f.size,
        what=what,
        headers=headers,
    )
    return LocalCopy(partial, sha, from_cache=False)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _chain(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def is_network_error(error: BaseException) -> bool:
    for e in _chain(error):
        if isinstance(e, ConnectionError | TimeoutError | socket.gaierror):
            return True
        if any(cls.__name__ in _NETWORK_ERRORS for cls in type(e).__mro__):
            return True
    return False


def reason(error: BaseException) -> str:
    text = " ".join(str(e) for e in _chain(error)).lower()
    if any(isinstance(e, socket.gaierror) for e in _chain(error)) or "name or service" in text:
        return "name resolution failed"
    if "refused" in text:
        return "connection refused"
    timeouts = any(isinstance(e, TimeoutError) for e in _chain(error))
    if timeouts or "timed out" in text or "timeout" in text:
        return "timed out"
    return str(error).splitlines()[0][:120] if str(error) else type(error).__name__
