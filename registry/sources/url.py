"""A GGUF file at a URL: `https://host/path/model.gguf[#sha256=<hex>]` (plain `http://` too).

The file is downloaded into a resumable partial file beside the blobs (an
interrupted pull resumes with a `Range` request), checked against the `#sha256=`
fragment when one is given (else its computed hash is recorded), checked to be a
complete GGUF, and stored as a blob.
"""

from __future__ import annotations

import hashlib
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import PurePosixPath

from corral.registry.download import download
from corral.registry.errors import SourceError, shown
from corral.registry.gguf_info import check_gguf
from corral.registry.httpio import HttpOptions, redact
from corral.registry.names import DEFAULT_NAMESPACE, DEFAULT_TAG, ModelName, slug
from corral.registry.progress import PullProgress, short
from corral.registry.sources.base import FetchContext, Fetched

_FRAGMENT = re.compile(r"sha256=(?P<sha>[0-9a-fA-F]{64})")


@dataclass(frozen=True)
class UrlSource:
    spec: str
    url: str  # without the fragment
    sha256: str | None = None

    @classmethod
    def parse(cls, spec: str) -> UrlSource:
        text = spec.strip()
        parts = urllib.parse.urlsplit(text)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise SourceError(f"bad URL '{shown(spec)}': write https://host/path/model.gguf")
        sha = None
        if parts.fragment:
            m = _FRAGMENT.fullmatch(parts.fragment)
            if m is None:
                raise SourceError(
                    f"bad URL fragment '#{shown(parts.fragment)}': only #sha256=<64 hex> is known"
                )
            sha = m["sha"].lower()
        if not PurePosixPath(urllib.parse.unquote(parts.path)).name.lower().endswith(".gguf"):
            raise SourceError(f"URL '{shown(redact(text))}' does not name a .gguf file")
        return cls(text, urllib.parse.urlunsplit(parts._replace(fragment="")), sha)

    def default_name(self) -> ModelName:
        parts = urllib.parse.urlsplit(self.url)
        host = slug(parts.hostname or "url")
        stem = PurePosixPath(urllib.parse.unquote(parts.path)).name[: -len(".gguf")]
        return ModelName(host, DEFAULT_NAMESPACE, slug(stem), DEFAULT_TAG)

    def describe(self) -> str:
        return urllib.parse.urlsplit(self.url).netloc.rsplit("@", 1)[-1]

    def fetch(self, ctx: FetchContext) -> Fetched:
        if self.sha256 and ctx.blobs.pin_if_stored(f"sha256:{self.sha256}"):
            ctx.progress(PullProgress("already stored", digest=f"sha256:{self.sha256}"))
            return Fetched(f"sha256:{self.sha256}", self._provenance(self.sha256))
        key = self.sha256 or hashlib.sha256(self.url.encode()).hexdigest()
        partial = ctx.blobs.partial_path(f"url-{key}")
        digest = f"sha256:{self.sha256}" if self.sha256 else None
        status = f"pulling {short(key)}"
        name = PurePosixPath(urllib.parse.urlsplit(self.url).path).name

        def progress(done: int, total: int | None) -> None:
            ctx.progress(PullProgress(status, digest=digest, total=total, completed=done))

        sha = download(
            self.url,
            partial,
            expected_sha256=self.sha256,
            options=HttpOptions(),
            progress=progress,
            cancel=ctx.cancel,
            what=f"{name} from {redact(self.url)}",
            mismatch_hint="the file at the URL is not the one its #sha256= names: check both",
        )
        try:
            ctx.progress(PullProgress("verifying sha256 digest", digest=f"sha256:{sha}"))
            stored = ctx.blobs.put_file(
                partial,
                expected=f"sha256:{sha}",
                check=lambda tmp: check_gguf(tmp, f"{redact(self.url)} is not a usable GGUF file"),
                cancel=ctx.cancel,
            )
        finally:
            partial.unlink(missing_ok=True)
        return Fetched(stored, self._provenance(sha))

    def _provenance(self, sha: str) -> dict[str, object]:
        return {
            "source": redact(self.spec),
            "kind": "url",
            "url": redact(self.url),
            "sha256": sha,
            "verified": self.sha256 is not None,
        }
