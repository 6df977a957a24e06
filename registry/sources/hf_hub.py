"""Talking to a Hugging Face hub: metadata through huggingface_hub, bytes through corral.

huggingface_hub (the real client) asks the hub which commit a revision is
(`model_info`), which files the repository holds with their LFS sha256
(`list_repo_tree`) and each file's headers (`get_hf_file_metadata`: commit, ETag /
X-Linked-Etag, size, redirect location). It honours HF_ENDPOINT (passed explicitly),
HF_TOKEN and the token file. The bytes are fetched by corral's `download()` into a
partial file beside the blobs, so an interrupted download resumes with a `Range`
request, across calls and restarts; every file is checked before use: LFS files
against their sha256, small git files against their git blob id. A file already in
the user's HF cache for that commit is used from there (and checked the same way).

A hub that cannot be reached fails within seconds (short timeout, no retries) so a
pull can fall over to its next source.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.parse
from pathlib import Path
from typing import Any

from corral.registry.errors import CorruptModel, SourceError, SourceUnreachable
from corral.registry.sources.base import FetchContext
from corral.registry.sources.hub_files import (
    LocalCopy,
    RemoteFile,
    download_partial,
    is_network_error,
    reason,
    sha256_file,
)

__all__ = ["Hub", "LocalCopy", "RemoteFile", "endpoint", "host", "timeout"]

DEFAULT_ENDPOINT = "https://huggingface.co"
DEFAULT_TIMEOUT = 5.0
# The daemon pulls, so the token must be its own: the client's environment is not sent.
TOKEN_HELP = "set HF_TOKEN where the daemon runs (`corral serve`'s environment)"
SHA256_RE = re.compile(r"[0-9a-f]{64}")


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def timeout() -> float:
    try:
        return float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or DEFAULT_TIMEOUT)
    except ValueError:
        return DEFAULT_TIMEOUT


def host() -> str:
    return urllib.parse.urlsplit(endpoint()).netloc or endpoint()


class Hub:
    """One repository at one revision on the hub HF_ENDPOINT names."""

    def __init__(self, repo_id: str, revision: str | None) -> None:
        self.repo_id = repo_id
        self.revision = revision
        self.endpoint = endpoint()

    def _api(self) -> Any:
        from huggingface_hub import HfApi

        return HfApi(endpoint=self.endpoint)

    def commit(self) -> str:
        """The commit sha the revision points to (model_info)."""
        api = self._api()
        info = self._call(
            lambda: api.model_info(self.repo_id, revision=self.revision, timeout=timeout())
        )
        if not info.sha:
            raise SourceError(f"{host()} gave no commit for {self.repo_id}")
        return str(info.sha)

    def files(self, commit: str) -> dict[str, RemoteFile]:
        """Every file of the repository at `commit` (list_repo_tree, recursive)."""
        from huggingface_hub.hf_api import RepoFile

        api = self._api()
        entries = self._call(
            lambda: list(api.list_repo_tree(self.repo_id, revision=commit, recursive=True))
        )
        return {
            e.path: RemoteFile(e.path, e.size, e.lfs.sha256 if e.lfs else None, e.blob_id)
            for e in entries
            if isinstance(e, RepoFile)
        }

    def file_metadata(self, path: str, revision: str | None) -> tuple[RemoteFile, str, str]:
        """(file, commit, download location) from the file's HEAD (get_hf_file_metadata)."""
        import huggingface_hub as hf

        url = hf.hf_hub_url(self.repo_id, path, revision=revision, endpoint=self.endpoint)
        meta = self._call(lambda: hf.get_hf_file_metadata(url, timeout=timeout()), path)
        etag = (meta.etag or "").lower()
        sha = etag if SHA256_RE.fullmatch(etag) else None
        oid = etag if re.fullmatch(r"[0-9a-f]{40}", etag) else None
        commit = meta.commit_hash or revision or "main"
        return RemoteFile(path, meta.size, sha, oid), commit, meta.location or url

    def fetch(
        self, f: RemoteFile, commit: str, ctx: FetchContext, location: str | None = None
    ) -> LocalCopy:
        """The file's bytes, checked: from the HF cache, or downloaded (resuming). Without
        `location` the file's HEAD is asked first (where to get it, its ETag)."""
        cached = self._from_cache(f, commit)
        if cached is not None:
            return cached
        if location is not None:
            return self._download(f, location, ctx)
        known, _, location = self.file_metadata(f.path, commit)
        if f.sha256 and known.sha256 and known.sha256 != f.sha256:
            raise CorruptModel(
                f"{self.repo_id}/{f.path}: the hub lists sha256 {f.sha256} but serves "
                f"{known.sha256}; try the pull again later"
            )
        sha, oid = f.sha256 or known.sha256, f.git_oid or known.git_oid
        return self._download(RemoteFile(f.path, f.size or known.size, sha, oid), location, ctx)

    def _download(self, f: RemoteFile, url: str, ctx: FetchContext) -> LocalCopy:
        got = download_partial(
            f, url, ctx, kind="hf", what=f"{f.path} from {self.repo_id}",
            headers=self._headers(url), timeout=max(timeout(), 15.0),
        )  # fmt: skip
        self._check_git(f, got.path)
        return got

    def _headers(self, url: str) -> dict[str, str]:
        """huggingface_hub's headers (user agent, `Authorization: Bearer $HF_TOKEN`); the
        token only goes to the hub itself, never to a CDN it redirects to."""
        from huggingface_hub.utils import build_hf_headers

        headers = {k: str(v) for k, v in build_hf_headers().items()}
        if urllib.parse.urlsplit(url).netloc != urllib.parse.urlsplit(self.endpoint).netloc:
            headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        return headers

    def _from_cache(self, f: RemoteFile, commit: str) -> LocalCopy | None:
        import huggingface_hub as hf

        found = hf.try_to_load_from_cache(self.repo_id, f.path, revision=commit)
        if not isinstance(found, str) or not Path(found).is_file():
            return None
        path = Path(found)
        sha = sha256_file(path)
        if f.sha256 and sha != f.sha256:
            return None  # a damaged cache entry: download it afresh
        if f.git_oid and not f.sha256 and _git_oid(path) != f.git_oid:
            return None
        return LocalCopy(path, sha, from_cache=True)

    def _check_git(self, f: RemoteFile, path: Path) -> None:
        if f.sha256 is None and f.git_oid is not None and _git_oid(path) != f.git_oid:
            path.unlink(missing_ok=True)
            raise CorruptModel(
                f"{f.path} from {self.repo_id} is corrupt: git blob id mismatch "
                f"(expected {f.git_oid}); try the pull again"
            )

    def _call(self, fn: Any, path: str | None = None) -> Any:
        try:
            return fn()
        except Exception as e:
            if is_network_error(e):
                raise SourceUnreachable(f"{host()} unreachable ({reason(e)})") from None
            raise self.error(e, path) from None

    def error(self, error: Exception, path: str | None = None) -> SourceError:
        from huggingface_hub import errors

        where = f"{self.repo_id}@{self.revision}" if self.revision else self.repo_id
        table: list[tuple[type[Exception], str]] = [
            (
                errors.GatedRepoError,
                f"{where} is gated: accept its terms on {host()}; {TOKEN_HELP}",
            ),
            (
                errors.RepositoryNotFoundError,
                f"repository {self.repo_id} not found on {host()} (private? {TOKEN_HELP})",
            ),
            (errors.RevisionNotFoundError, f"revision {self.revision} not found in {self.repo_id}"),
            (errors.EntryNotFoundError, f"{path} not found in {where} on {host()}"),
        ]
        for kind, message in table:
            if isinstance(error, kind):
                return SourceError(message)
        status = getattr(getattr(error, "response", None), "status_code", None)
        if status is not None:
            return SourceError(f"{host()} answered HTTP {status} for {where}/{path or ''}")
        return SourceError(f"{host()}: {type(error).__name__}: {str(error).splitlines()[0][:200]}")


def _git_oid(path: Path) -> str:
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
