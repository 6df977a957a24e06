"""A GGUF file in a Hugging Face repository: `hf://org/repo[@revision]/file.gguf`.

Downloads go through huggingface_hub, so HF_ENDPOINT, HF_TOKEN and the user's
HF cache are honoured. A hub that cannot be reached must fail within seconds
so the pull can fall over to its next source: the file's metadata is fetched
first with a short timeout and no retries (huggingface_hub's own download
retries for about 20 s on connection errors), and only a hub that answers is
asked for the file. Offline, a copy already in the HF cache is used.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from corral.registry.errors import CorralError, PullCancelled, SourceError, SourceUnreachable, shown
from corral.registry.gguf_info import check_gguf
from corral.registry.names import ModelName, slug
from corral.registry.progress import ProgressFn, PullProgress, short
from corral.registry.sources.base import FetchContext, Fetched

HOST = "hf.co"
DEFAULT_ENDPOINT = "https://huggingface.co"
DEFAULT_TIMEOUT = 5.0
_SPEC = re.compile(
    r"hf://(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)"
    r"(?:@(?P<revision>[\w.%-]+))?/(?P<file>[^@]+)"
)
_NETWORK_ERRORS = {"TransportError", "TimeoutException", "ConnectionError", "Timeout", "ProxyError"}


@dataclass(frozen=True)
class HfSource:
    spec: str
    repo_id: str
    filename: str
    revision: str | None = None

    @classmethod
    def parse(cls, spec: str) -> HfSource:
        m = _SPEC.fullmatch(spec.strip())
        if m is None or ".." in m["file"].split("/") or m["file"].startswith("/"):
            raise SourceError(
                f"bad Hugging Face source '{shown(spec)}': write hf://org/repo[@revision]/file.gguf"
            )
        if not m["file"].lower().endswith(".gguf"):
            raise SourceError(f"hf source '{shown(spec)}': only .gguf files are supported so far")
        revision = urllib.parse.unquote(m["revision"]) if m["revision"] else None
        return cls(spec.strip(), m["repo"], m["file"], revision)

    def default_name(self) -> ModelName:
        org, repo = self.repo_id.split("/")
        stem = Path(self.filename).name.removesuffix(".gguf")
        return ModelName(HOST, slug(org), slug(repo), slug(stem))

    def describe(self) -> str:
        return urllib.parse.urlsplit(_endpoint()).netloc or _endpoint()

    def fetch(self, ctx: FetchContext) -> Fetched:
        path, etag, commit = self._download(ctx)
        expected = f"sha256:{etag}" if etag and re.fullmatch(r"[0-9a-f]{64}", etag) else None
        size = path.stat().st_size
        status = f"copying {self.filename}"
        digest = ctx.blobs.put_file(
            path,
            expected=expected,
            check=lambda tmp: check_gguf(tmp, f"{self.spec} is not a usable GGUF file"),
            progress=lambda done: ctx.progress(PullProgress(status, total=size, completed=done)),
            cancel=ctx.cancel,
        )
        provenance = {
            "source": self.spec,
            "kind": "huggingface",
            "endpoint": _endpoint(),
            "repo": self.repo_id,
            "revision": commit or self.revision or "main",
            "file": self.filename,
            "sha256": digest.removeprefix("sha256:"),
        }
        return Fetched(digest, provenance)

    def _download(self, ctx: FetchContext) -> tuple[Path, str | None, str | None]:
        """(local file, etag, commit) from the hub, or from the HF cache when offline."""
        import huggingface_hub as hub

        endpoint, timeout = _endpoint(), _timeout()
        url = hub.hf_hub_url(self.repo_id, self.filename, revision=self.revision, endpoint=endpoint)
        try:
            meta = hub.get_hf_file_metadata(url, timeout=timeout)
        except Exception as e:
            if not _is_network_error(e):
                raise self._error(e) from None
            cached = self._cached()
            if cached is None:
                raise SourceUnreachable(f"{self.describe()} unreachable ({_reason(e)})") from None
            return cached, cached.resolve().name, None
        progress = _progress_class(ctx.progress, ctx.cancel, meta.etag or self.filename)
        try:
            path = hub.hf_hub_download(
                self.repo_id,
                self.filename,
                revision=self.revision,
                endpoint=endpoint,
                etag_timeout=timeout,
                tqdm_class=progress,
            )
        except CorralError:
            raise
        except Exception as e:
            if _is_network_error(e):
                raise SourceUnreachable(f"{self.describe()} unreachable ({_reason(e)})") from None
            raise self._error(e) from None
        return Path(path), meta.etag, meta.commit_hash

    def _cached(self) -> Path | None:
        import huggingface_hub as hub

        try:
            path = hub.hf_hub_download(
                self.repo_id, self.filename, revision=self.revision, local_files_only=True
            )
        except Exception:
            return None
        return Path(path)

    def _error(self, error: Exception) -> SourceError:
        from huggingface_hub import errors

        where = f"{self.repo_id}@{self.revision}" if self.revision else self.repo_id
        host = self.describe()
        table: list[tuple[type[Exception], str]] = [
            (errors.GatedRepoError, f"{where} is gated: accept its terms on {host}, set HF_TOKEN"),
            (
                errors.RepositoryNotFoundError,
                f"repository {self.repo_id} not found on {host} (private? set HF_TOKEN)",
            ),
            (errors.RevisionNotFoundError, f"revision {self.revision} not found in {self.repo_id}"),
            (errors.EntryNotFoundError, f"{self.filename} not found in {where} on {host}"),
        ]
        for kind, message in table:
            if isinstance(error, kind):
                return SourceError(message)
        status = getattr(getattr(error, "response", None), "status_code", None)
        if status is not None:
            return SourceError(f"{host} answered HTTP {status} for {where}/{self.filename}")
        return SourceError(f"{host}: {type(error).__name__}: {str(error).splitlines()[0][:200]}")


def _endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def _timeout() -> float:
    try:
        return float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or DEFAULT_TIMEOUT)
    except ValueError:
        return DEFAULT_TIMEOUT


def _chain(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _is_network_error(error: BaseException) -> bool:
    for e in _chain(error):
        if isinstance(e, ConnectionError | TimeoutError | socket.gaierror):
            return True
        if any(cls.__name__ in _NETWORK_ERRORS for cls in type(e).__mro__):
            return True
    return False


def _reason(error: BaseException) -> str:
    text = " ".join(str(e) for e in _chain(error)).lower()
    if any(isinstance(e, socket.gaierror) for e in _chain(error)) or "name or service" in text:
        return "name resolution failed"
    if "refused" in text:
        return "connection refused"
    if "timed out" in text or "timeout" in text:
        return "timed out"
    return str(error).splitlines()[0][:120] if str(error) else type(error).__name__


def _progress_class(progress: ProgressFn, cancel: threading.Event, etag: str) -> type[tqdm]:
    """A silent tqdm that forwards byte counts as pull progress and honours cancel."""
    status = f"pulling {short(etag)}"
    digest = f"sha256:{etag}" if re.fullmatch(r"[0-9a-f]{64}", etag) else None

    class _Forward(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.pop("name", None)
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self.done = int(kwargs.get("initial") or 0)

        def update(self, n: float | None = 1) -> bool | None:
            if cancel.is_set():
                raise PullCancelled()
            self.done += int(n or 0)
            progress(PullProgress(status, digest=digest, total=self.total, completed=self.done))
            return super().update(n)

    return _Forward
