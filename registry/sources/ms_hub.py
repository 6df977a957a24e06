"""Talking to a ModelScope hub: metadata through the modelscope client, bytes through corral.

modelscope (the real client, `modelscope.hub.api.HubApi`) resolves the revision
(`get_valid_revision_detail`: a branch or tag, `master` by default; GET
/api/v1/models/{repo}/revisions) and lists the repository's files with their size and
sha256 (`list_repo_files`: GET /api/v1/models/{repo}/repo/files). The download URL is
the client's own (`get_file_download_url`: /api/v1/models/{repo}/repo?Revision=&FilePath=),
fetched by corral's `download()` into a partial file beside the blobs, so an interrupted
download resumes with a `Range` request across calls and restarts; every file is checked
against the sha256 the listing gives before use (hub_files.py). A file already in the
user's ModelScope cache (MODELSCOPE_CACHE) with that sha256 is used from there.

The endpoint is what the client reads: MODELSCOPE_ENDPOINT, else MODELSCOPE_DOMAIN
(deprecated by modelscope; a bare domain gets https://, so a hub on plain HTTP is
`MODELSCOPE_DOMAIN=http://127.0.0.1:PORT` or `MODELSCOPE_ENDPOINT=http://...`), else the
client's own choice between modelscope.cn and modelscope.ai (MODELSCOPE_PREFER_AI_SITE),
which it makes by asking both. The token is MODELSCOPE_API_TOKEN or the one
`modelscope login` saved (under MODELSCOPE_HOME), sent as the client sends it (a Bearer
header and the m_session_id cookie), and only to the hub: a file the hub redirects to
object storage is fetched from there without it. A hub that cannot be reached fails
within seconds (short timeout, no retries) so a pull can fall over to its next source.
"""

from __future__ import annotations

import contextlib
import os
import urllib.parse
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from corral.registry.errors import SourceError, SourceUnreachable
from corral.registry.sources.base import FetchContext
from corral.registry.sources.hub_files import (
    LocalCopy,
    RemoteFile,
    download_partial,
    is_network_error,
    reason,
    sha256_file,
)

DEFAULT_ENDPOINT = "https://modelscope.cn"
API_TIMEOUT = 5  # seconds for one API answer (the client's default is 60)
DOWNLOAD_TIMEOUT = 15.0
ENDPOINT_VARS = ("MODELSCOPE_ENDPOINT", "MODELSCOPE_DOMAIN")
TOKEN_HELP = (
    "set MODELSCOPE_API_TOKEN where the daemon runs (`corral serve`'s environment), "
    "or run `modelscope login` as its user"
)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The client warns that MODELSCOPE_DOMAIN is deprecated whenever it reads its
    configuration; corral honours the variable, so the warning says nothing useful."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Environment variable MODELSCOPE_DOMAIN is deprecated")
        yield


def _config() -> Any:
    """The modelscope client's configuration, read afresh (its process-wide default is
    read once): endpoint, token, cache folder."""
    from modelscope_hub import HubConfig

    with _quiet():
        return HubConfig()


def configured_endpoint() -> str | None:
    """The endpoint MODELSCOPE_ENDPOINT / MODELSCOPE_DOMAIN name, as the client reads them."""
    if not any(os.environ.get(var, "").strip() for var in ENDPOINT_VARS):
        return None
    return str(_config().endpoint)


def host(endpoint: str | None = None) -> str:
    url = endpoint or configured_endpoint() or DEFAULT_ENDPOINT
    return urllib.parse.urlsplit(url).netloc or url


class MsHub:
    """One repository on the ModelScope hub the environment names."""

    def __init__(self, repo_id: str, revision: str | None) -> None:
        config = _config()
        self.repo_id = repo_id
        self.revision = revision
        self.token: str | None = config.token or None
        self.cache_dir = Path(config.cache_dir)
        self._endpoint = configured_endpoint()

    @property
    def endpoint(self) -> str:
        """The configured endpoint, else the one the client picks for this repository."""
        if self._endpoint is None:
            api = self._api(None)
            nowhere = f"model {self.repo_id} is neither on modelscope.cn nor on modelscope.ai"
            found = self._call(lambda: api.get_endpoint_for_read(self.repo_id), nowhere)
            self._endpoint = str(found)
        return self._endpoint

    def known_endpoint(self) -> str:
        return self._endpoint or DEFAULT_ENDPOINT

    def _api(self, endpoint: str | None) -> Any:
        from modelscope.hub.api import HubApi

        with _quiet():
            return HubApi(endpoint=endpoint, token=self.token, timeout=API_TIMEOUT, max_retries=0)

    def resolve(self) -> str:
        """The branch or tag to read (`master` unless the source names one)."""
        api = self._api(self.endpoint)
        detail = self._call(lambda: api.get_valid_revision_detail(self.repo_id, self.revision))
        return str(detail.get("Revision") or self.revision or "master")

    def files(self, revision: str) -> dict[str, RemoteFile]:
        """Every file of the repository at `revision`, with its size and sha256."""
        api = self._api(self.endpoint)
        entries = self._call(lambda: api.list_repo_files(self.repo_id, "model", revision=revision))
        return {
            e.path: RemoteFile(e.path, e.size, (e.sha256 or "").lower() or None)
            for e in entries
            if not e.is_dir
        }

    def fetch(self, f: RemoteFile, revision: str, ctx: FetchContext) -> LocalCopy:
        """The file's bytes, checked: from the ModelScope cache, or downloaded (resuming)."""
        if f.sha256 is None:
            raise SourceError(
                f"{host(self.endpoint)} gives no sha256 for {f.path} in {self.repo_id}, "
                "so corral cannot verify it; pull a file the hub lists with its hash"
            )
        cached = self._from_cache(f, revision)
        if cached is not None:
            return cached
        from modelscope.hub.file_download import get_file_download_url

        url = get_file_download_url(self.repo_id, f.path, revision, endpoint=self.endpoint)
        url, headers = self._location(url)
        what = f"{f.path} from {self.repo_id}"
        return download_partial(
            f, url, ctx, kind="ms", what=what, headers=headers, timeout=DOWNLOAD_TIMEOUT
        )

    def cached_snapshot(self) -> Path | None:
        """The repository as the modelscope client left it in the user's cache (offline)."""
        from modelscope.hub.snapshot_download import snapshot_download

        with contextlib.suppress(Exception):
            found = snapshot_download(
                self.repo_id,
                revision=self.revision,
                cache_dir=str(self.cache_dir),
                local_files_only=True,
            )
            return Path(found) if Path(found).is_dir() else None
        return None

    def _from_cache(self, f: RemoteFile, revision: str) -> LocalCopy | None:
        from modelscope.hub.file_download import model_file_download

        with contextlib.suppress(Exception):
            where = {"revision": revision, "cache_dir": str(self.cache_dir)}
            found = Path(model_file_download(self.repo_id, f.path, **where, local_files_only=True))
            if found.is_file() and (sha := sha256_file(found)) == f.sha256:
                return LocalCopy(found, sha, from_cache=True)
        return None  # absent, or a different (older, damaged) copy: download it

    def _location(self, url: str) -> tuple[str, dict[str, str]]:
        """Where to GET the file and with which headers. With a token, the hub is asked
        first (HEAD, redirects not followed) so the token never goes to object storage."""
        from modelscope.hub.api import ModelScopeConfig

        with _quiet():
            headers = {"User-Agent": ModelScopeConfig.get_user_agent()}
        if self.token is None:
            return url, headers
        auth = {"Authorization": f"Bearer {self.token}", "Cookie": f"m_session_id={self.token}"}
        storage = self._call(lambda: _redirect_of(url, headers | auth))
        return (storage, headers) if storage else (url, headers | auth)

    def _call(self, fn: Any, missing: str | None = None) -> Any:
        """fn() with the client's errors turned into one line; `missing` is the message
        for a NotExistError the client raises itself (no HTTP status)."""
        try:
            return fn()
        except Exception as e:
            if is_network_error(e):
                where = host(self._endpoint)
                raise SourceUnreachable(f"{where} unreachable ({reason(e)})") from None
            raise self.error(e, missing) from None

    def error(self, error: Exception, missing: str | None = None) -> SourceError:
        from modelscope_hub import errors

        where = f"{self.repo_id}@{self.revision}" if self.revision else self.repo_id
        status = getattr(error, "status_code", None)
        name = host(self._endpoint)
        revision = self.revision or "master"
        missing = missing or f"revision {revision} not found in {self.repo_id} on {name}"
        table: list[tuple[type[Exception], bool, str]] = [
            (errors.NotExistError, status is None, missing),  # raised by the client itself
            (errors.NotExistError, True, f"model {self.repo_id} not found on {name}"),
            (errors.AuthenticationError, True, f"{where} is private on {name}: {TOKEN_HELP}"),
            (errors.PermissionDeniedError, True, f"no access to {where} on {name}: {TOKEN_HELP}"),
        ]
        for kind, applies, message in table:
            if isinstance(error, kind) and applies:
                return SourceError(message)
        if status is not None:
            return SourceError(f"{name} answered HTTP {status} for {where}")
        return SourceError(f"{name}: {type(error).__name__}: {_first_line(error)}")


def _redirect_of(url: str, headers: dict[str, str]) -> str | None:
    """The Location a HEAD of `url` is redirected to, if it is."""
    import requests

    with requests.head(url, headers=headers, allow_redirects=False, timeout=API_TIMEOUT) as r:
        if r.is_redirect and r.headers.get("Location"):
            return urllib.parse.urljoin(url, r.headers["Location"])
    return None


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else "no details"
