"""Resumable, hash-checked downloads into a partial file beside the blobs.

A partial file keeps what arrived so far; the next attempt asks the server for
the rest with a `Range` header (a server that ignores it sends everything
again and the partial file starts over). The sha256 is computed over the whole
file, old bytes included, and compared with the expected one at the end; a
mismatch deletes the partial file. A cancel or a network error keeps it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO

from corral.registry.blobs import CHUNK
from corral.registry.errors import CorruptModel, PullCancelled, SourceUnreachable
from corral.registry.httpio import (
    HttpOptions,
    RangeNotSatisfiable,
    open_url,
    redact,
)

# (completed bytes, total bytes or None) -> None
ByteProgress = Callable[[int, int | None], None]


def download(
    url: str,
    partial: Path,
    *,
    expected_sha256: str | None,
    options: HttpOptions,
    progress: ByteProgress,
    cancel: threading.Event,
    total: int | None = None,
    what: str = "download",
    headers: Mapping[str, str] | None = None,
    mismatch_hint: str = "try the pull again",
) -> str:
    """Download `url` into `partial` (resuming it) and return the file's sha256 hex.

    `headers` are sent with every request (e.g. a hub's Authorization); `mismatch_hint`
    ends the error of a file whose sha256 is not `expected_sha256`. A failure before any
    byte arrived leaves no empty partial file behind."""
    base = dict(headers or {})
    with _no_empty_partial(partial), _locked(partial, cancel) as f:
        h, have = _hash_existing(f, cancel)
        try:
            response = open_url(url, options, base | {"Range": f"bytes={have}-"} if have else base)
        except RangeNotSatisfiable:  # the partial file may already be complete
            if expected_sha256 is not None and h.hexdigest() == expected_sha256.lower():
                progress(have, have)
                return h.hexdigest()
            f.seek(0)
            f.truncate()
            h, have = hashlib.sha256(), 0
            response = open_url(url, options, base)
        with response:
            if have and response.status != 206:  # server sent the whole file again
                f.seek(0)
                f.truncate()
                h, have = hashlib.sha256(), 0
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit():
                total = have + int(length)
            _stream(response, f, h, have, total, progress, cancel, url)
        actual = h.hexdigest()
        if expected_sha256 is not None and actual != expected_sha256.lower():
            partial.unlink(missing_ok=True)
            raise CorruptModel(
                f"{what} is corrupt: sha256 mismatch (expected {expected_sha256}, got {actual}); "
                + mismatch_hint
            )
        return actual


@contextlib.contextmanager
def _no_empty_partial(partial: Path) -> Iterator[None]:
    """On failure, remove the partial file if no byte ever reached it."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(OSError):
            if partial.stat().st_size == 0:
                partial.unlink()
        raise


def _stream(
    response: IO[bytes],
    out: IO[bytes],
    h: hashlib._Hash,
    done: int,
    total: int | None,
    progress: ByteProgress,
    cancel: threading.Event,
    url: str,
) -> None:
    progress(done, total)
    while True:
        if cancel.is_set():
            raise PullCancelled()
        try:
            chunk = response.read(CHUNK)
        except (OSError, http.client.HTTPException) as e:
            raise SourceUnreachable(f"download from {redact(url)} interrupted ({e})") from None
        if not chunk:
            break
        out.write(chunk)
        h.update(chunk)
        done += len(chunk)
        progress(done, total)
    out.flush()
    os.fsync(out.fileno())
    if total is not None and done < total:
        raise SourceUnreachable(
            f"download from {redact(url)} ended early ({done} of {total} bytes); try again"
        )


def _hash_existing(f: IO[bytes], cancel: threading.Event) -> tuple[hashlib._Hash, int]:
    h = hashlib.sha256()
    f.seek(0)
    have = 0
    while chunk := f.read(CHUNK):
        if cancel.is_set():
            raise PullCancelled()
        h.update(chunk)
        have += len(chunk)
    return h, have


@contextlib.contextmanager
def _locked(partial: Path, cancel: threading.Event) -> Iterator[IO[bytes]]:
    """Open the partial file exclusively (another pull of the same file waits)."""
    partial.parent.mkdir(parents=True, exist_ok=True)
    while True:
        with open(partial, "a+b") as f:
            _wait_for_lock(f, cancel)
            if os.fstat(f.fileno()).st_nlink == 0:
                continue  # the previous holder finished and removed it: start afresh
            try:
                yield f
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)
            return


def _wait_for_lock(f: IO[bytes], cancel: threading.Event) -> None:
    while True:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if cancel.is_set():
                raise PullCancelled() from None
            time.sleep(0.2)
