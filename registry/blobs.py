"""The content-addressed blob store: `blobs/sha256-<64 hex>`.

A blob is written to a temporary file in the same folder, hashed while it is
written, fsynced, checked, and then linked into place under its digest; it is
never modified afterwards. A blob that just arrived is pinned until its
manifest is written, so a concurrent garbage collection cannot take it.
Partial downloads (`partial-*`) live beside the blobs so they can resume.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from corral.registry.errors import CorruptModel, DiskFull, PullCancelled

log = logging.getLogger(__name__)

CHUNK = 1 << 20
STALE_SECONDS = 24 * 3600
# Files being written: tmp-* (copies, conversions), .tmp-* (the quantizer's own .part files)
TEMPORARY = ("tmp-", ".tmp-")
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
_BLOB_FILE_RE = re.compile(r"sha256-[0-9a-f]{64}")

# completed bytes -> None; raise to stop
Progress = Callable[[int], None]
# temporary file -> None; raise CorruptModel (or another error) to refuse it
Check = Callable[[Path], None]


def is_digest(text: object) -> bool:
    return isinstance(text, str) and DIGEST_RE.fullmatch(text) is not None


def digest_of(path: Path) -> str:
    """sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return f"sha256:{h.hexdigest()}"


def check_room(folder: Path, incoming: int, keep_free: int) -> None:
    """DiskFull unless `incoming` more bytes leave at least `keep_free` bytes free."""
    stat = os.statvfs(folder)
    free = stat.f_bavail * stat.f_frsize
    if free - incoming < keep_free:
        raise DiskFull(
            f"not enough disk space for {incoming or 'more'} bytes: {free >> 20} MiB free in "
            f"{folder}, of which {keep_free >> 20} MiB is kept free"
        )


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobStore:
    """Blobs under one folder. Thread-safe within a process."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._pins: Counter[str] = Counter()

    def path(self, digest: str) -> Path:
        if not is_digest(digest):
            raise CorruptModel(f"'{digest}' is not a sha256 digest (expected sha256:<64 hex>)")
        return self.root / digest.replace(":", "-", 1)

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def partial_path(self, key: str) -> Path:
        """Where a resumable download identified by `key` (hex or a safe word) lives."""
        if not re.fullmatch(r"[a-z0-9_-]{1,80}", key):
            raise ValueError(f"bad partial-download key {key!r}")
        return self.root / f"partial-{key}"

    def put_stream(
        self,
        stream: BinaryIO,
        *,
        expected: str | None = None,
        check: Check | None = None,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
        what: str = "download",
        keep_free: int = 0,
    ) -> str:
        """Copy `stream` into a new blob and return its digest (pinned: see `unpin`).

        `expected` is a digest to verify before the blob becomes visible; `check`
        validates the complete temporary file (e.g. that it is a GGUF). With `keep_free`,
        a stream that would leave less disk space free stops with DiskFull.
        """
        tmp = self.root / f"tmp-{uuid.uuid4().hex}"
        try:
            actual = _copy_hashing(stream, tmp, progress, cancel, keep_free)
            if expected is not None and actual != expected:
                raise CorruptModel(
                    f"{what} is corrupt: sha256 mismatch (expected {expected}, got {actual})"
                )
            if check is not None:
                check(tmp)
            self._commit(tmp, actual)
            return actual
        finally:
            tmp.unlink(missing_ok=True)

    def put_file(
        self,
        path: Path,
        *,
        expected: str | None = None,
        check: Check | None = None,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ) -> str:
        """Copy a file into a new blob; same checks as `put_stream`."""
        with open(path, "rb") as f:
            return self.put_stream(
                f, expected=expected, check=check, progress=progress, cancel=cancel, what=str(path)
            )

    def _commit(self, tmp: Path, digest: str) -> None:
        final = self.path(digest)
        with self._lock:
            try:
                os.link(tmp, final)  # never replaces an existing blob
            except FileExistsError:
                log.debug("blob %s already present", digest)
            self._pins[digest] += 1
        fsync_dir(self.root)

    def pin(self, digest: str) -> None:
        with self._lock:
            self._pins[digest] += 1

    def pin_if_stored(self, digest: str) -> bool:
        """Pin `digest` if its blob is stored (a pull then needs not fetch it again)."""
        with self._lock:
            if not self.path(digest).is_file():
                return False
            self._pins[digest] += 1
            return True

    def unpin(self, digest: str) -> None:
        with self._lock:
            self._pins[digest] -= 1
            if self._pins[digest] <= 0:
                del self._pins[digest]

    @contextlib.contextmanager
    def pinned(self, digest: str) -> Iterator[None]:
        self.pin(digest)
        try:
            yield
        finally:
            self.unpin(digest)

    def digests(self) -> set[str]:
        names = (p.name for p in self.root.iterdir())
        return {n.replace("-", ":", 1) for n in names if _BLOB_FILE_RE.fullmatch(n)}

    def gc(self, referenced: set[str]) -> list[str]:
        """Remove blobs neither referenced nor pinned, and stale temporary files."""
        removed: list[str] = []
        with self._lock:
            for digest in sorted(self.digests() - referenced - set(self._pins)):
                self.path(digest).unlink(missing_ok=True)
                removed.append(digest)
        self._remove_stale(time.time() - STALE_SECONDS)
        if removed:
            log.info("collected %d unreferenced blob(s)", len(removed))
        return removed

    def remove_temporaries(self) -> None:
        """Remove every temporary file, whatever its age: for the one process that owns the
        store (the daemon, at startup), they are left by a crash. Unlike `partial-*`
        downloads, they cannot be resumed."""
        self._remove_stale(math.inf, TEMPORARY)

    def _remove_stale(
        self, before: float, prefixes: tuple[str, ...] = (*TEMPORARY, "partial-")
    ) -> None:
        """Remove the temporary files (`prefixes`) last written before `before`."""
        for p in self.root.iterdir():
            if p.name.startswith(prefixes):
                with contextlib.suppress(FileNotFoundError):
                    if p.stat().st_mtime < before:
                        p.unlink()
                        log.info("removed stale temporary file %s", p.name)


def _copy_hashing(
    stream: BinaryIO,
    dest: Path,
    progress: Progress | None,
    cancel: threading.Event | None,
    keep_free: int = 0,
) -> str:
    """Write `stream` to `dest` (fsynced), return the sha256 digest of what was written."""
    h = hashlib.sha256()
    done = 0
    with open(dest, "xb") as out:
        while chunk := stream.read(CHUNK):
            if cancel is not None and cancel.is_set():
                raise PullCancelled()
            if keep_free:
                check_room(dest.parent, len(chunk), keep_free)
            h.update(chunk)
            out.write(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done)
        out.flush()
        os.fsync(out.fileno())
    return f"sha256:{h.hexdigest()}"
