"""What the model-hub sources share (hf.py, ms.py): the `org/repo[@revision][/file.gguf |
:QUANT]` grammar, and a repository's listing turned into a blob.

- A repository of GGUF files: the file of the requested quantization (Q4_K_M unless
  `:QUANT` says otherwise; `:<file name>` works too); a missing one is reported with the
  quantizations the repository has (hf_pick.py).
- A safetensors checkpoint (single file or sharded): config.json is fetched first and its
  architecture checked, then the tokenizer files and the weights; the checkpoint is
  converted and quantized (`:QUANT`, else the recipe's quantization, else Q4_K_M;
  `:F16`/`:BF16` keep it unquantized).
The hub itself (its client, its endpoint, its cache) stays with each source: all this
needs of one is `fetch(file, revision, ctx) -> LocalCopy`, the file's bytes, verified.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self

from corral.registry.convert.checkpoint import (
    CONFIG,
    INDEX,
    SINGLE,
    Checkpoint,
    has_weights,
    metadata_files,
    no_weights_message,
    shard_names,
)
from corral.registry.convert.pipeline import (
    DEFAULT_QUANTIZATION,
    Sink,
    check_quantization,
    store_checkpoint,
)
from corral.registry.convert.writer import architecture_of
from corral.registry.errors import SourceError, shown
from corral.registry.gguf_info import check_gguf
from corral.registry.names import DEFAULT_TAG, ModelName, slug
from corral.registry.progress import PullProgress
from corral.registry.sources.base import FetchContext, Fetched
from corral.registry.sources.hf_pick import model_files, pick_gguf
from corral.registry.sources.hub_files import LocalCopy, RemoteFile

_REPO = r"(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)"
_TAIL = r"(?:@(?P<revision>[\w.%-]+))?(?:/(?P<file>[^@:]+)|:(?P<tag>[\w.-]+))?"


class FileHub(Protocol):
    repo_id: str

    def fetch(self, f: RemoteFile, revision: str, ctx: FetchContext) -> LocalCopy:
        """The file's bytes, verified (from the hub client's cache or downloaded)."""
        ...


@dataclass(frozen=True)
class RepoSpec:
    repo_id: str
    filename: str | None = None  # an explicit .gguf file
    revision: str | None = None
    tag: str | None = None  # a quantization or a file name

    def default_name(self, host: str) -> ModelName:
        """`host/org/repo:tag`: the tag is the quantization asked for, or the file's stem."""
        org, repo = self.repo_id.split("/")
        if self.filename is not None:
            stem = Path(self.filename).name.removesuffix(".gguf").removesuffix(".GGUF")
            return ModelName(host, slug(org), slug(repo), slug(stem))
        return ModelName(host, slug(org), slug(repo), slug(self.tag) if self.tag else DEFAULT_TAG)


def parse_repo_spec(spec: str, prefix: str, hub: str, scheme: str, usage: str) -> RepoSpec:
    """Parse `<prefix>org/repo[@revision][/file.gguf | :QUANT]` (`prefix` a regex) of the
    hub named `hub`, whose sources are `scheme://...`; `usage` says how to write one."""
    m = re.fullmatch(f"(?:{prefix}){_REPO}{_TAIL}", spec.strip())
    if m is None or (m["file"] and (".." in m["file"].split("/") or m["file"].startswith("/"))):
        raise SourceError(f"bad {hub} source '{shown(spec)}': {usage}")
    if m["file"] and not m["file"].lower().endswith(".gguf"):
        raise SourceError(
            f"{scheme} source '{shown(spec)}': name a .gguf file, or the repository itself "
            f"({scheme}://org/repo) to convert its safetensors checkpoint"
        )
    revision = urllib.parse.unquote(m["revision"]) if m["revision"] else None
    tag = None if m["tag"] == DEFAULT_TAG else m["tag"]  # :latest, as a listed name has it
    return RepoSpec(m["repo"], m["file"], revision, tag)


@dataclass(frozen=True)
class RepoSource:
    """A hub repository as a source (hf://, ms://): the spec as written and its parts. Each
    hub's subclass names the hub, its prefixes and the host of installed names, and
    fetches."""

    spec: str
    repo_id: str
    filename: str | None = None  # an explicit .gguf file
    revision: str | None = None  # a branch, tag or commit
    tag: str | None = None  # a quantization or a file name

    hub: ClassVar[str]  # its name in messages: "Hugging Face"
    scheme: ClassVar[str]  # "hf" of hf://
    prefix: ClassVar[str]  # a regex of the prefixes a spec may start with
    usage: ClassVar[str]  # how to write one
    name_host: ClassVar[str]  # installed names are <name_host>/org/repo:tag

    @classmethod
    def parse(cls, spec: str) -> Self:
        r = parse_repo_spec(spec, cls.prefix, cls.hub, cls.scheme, cls.usage)
        return cls(spec.strip(), r.repo_id, r.filename, r.revision, r.tag)

    def default_name(self) -> ModelName:
        spec = RepoSpec(self.repo_id, self.filename, self.revision, self.tag)
        return spec.default_name(self.name_host)

    def identity(self) -> tuple[str, ...]:
        """What makes two specs the same source, however they are spelled (hf:// or
        hf.co/, the repo's case, a quantization's case)."""
        parts = (self.repo_id, self.filename or "", self.tag or "")
        return (self.scheme, *(x.lower() for x in parts), self.revision or "")


@dataclass(frozen=True)
class RepoBlob:
    """One pull of one repository at one revision: its files into a blob, with provenance."""

    spec: str  # the source as written
    repo_id: str
    where: str  # "org/repo@revision" for messages
    tag: str | None
    base: dict[str, Any] = field(default_factory=dict)  # the source's provenance
    hf_repo: str | None = None  # recorded as general.source.huggingface.repository

    def from_listing(
        self, hub: FileHub, files: dict[str, RemoteFile], revision: str, ctx: FetchContext
    ) -> Fetched:
        if model_files(files):
            path = pick_gguf(files, self.tag, self.repo_id)
            if (stored := self.stored(files[path].sha256, path, ctx)) is not None:
                return stored
            return self.gguf(hub.fetch(files[path], revision, ctx), path, ctx)
        if has_weights(files):
            return self.checkpoint(hub, files, revision, ctx)
        raise SourceError(no_weights_message(self.where, list(files)))

    def stored(self, sha: str | None, name: str, ctx: FetchContext) -> Fetched | None:
        """The file as a blob already in the store (same sha256: verified, checked when it
        came in), pinned; None if it is not there."""
        if sha is None or not ctx.blobs.pin_if_stored(f"sha256:{sha}"):
            return None
        ctx.progress(PullProgress(f"{Path(name).name} is already stored", digest=f"sha256:{sha}"))
        return Fetched(f"sha256:{sha}", self.base | {"file": name, "sha256": sha})

    def gguf(self, got: LocalCopy, name: str, ctx: FetchContext) -> Fetched:
        """Store a fetched GGUF file (a partial file is consumed, a cached one left alone)."""
        try:
            return self.store_gguf(got.path, got.sha256, name, ctx)
        finally:
            if not got.from_cache:
                got.path.unlink(missing_ok=True)

    def store_gguf(self, path: Path, sha: str | None, name: str, ctx: FetchContext) -> Fetched:
        size = path.stat().st_size
        status = f"copying {Path(name).name}"
        digest = ctx.blobs.put_file(
            path,
            expected=f"sha256:{sha}" if sha else None,
            check=lambda tmp: check_gguf(tmp, f"{self.spec} is not a usable GGUF file"),
            progress=lambda done: ctx.progress(PullProgress(status, total=size, completed=done)),
            cancel=ctx.cancel,
        )
        return Fetched(digest, self.base | {"file": name, "sha256": _hex(digest)})

    def checkpoint(
        self, hub: FileHub, files: dict[str, RemoteFile], revision: str, ctx: FetchContext
    ) -> Fetched:
        quantization = self._quantization(ctx)
        if CONFIG not in files:
            raise SourceError(f"{self.where} has no {CONFIG}, so it is not a transformers model")
        fetched: dict[str, LocalCopy] = {}

        def get(name: str) -> Path:
            if name not in files:
                raise SourceError(f"{self.where}: {name} is missing")
            fetched[name] = hub.fetch(files[name], revision, ctx)
            return fetched[name].path

        architecture_of(read_json(get(CONFIG), self.where), self.where)  # before the weights
        for name in metadata_files(files)[1:]:
            get(name)
        index = read_json(get(INDEX), self.where) if INDEX in files else None
        for name in shard_names(index, self.where) if index is not None else [SINGLE]:
            get(name)
        local = {name: got.path for name, got in fetched.items()}
        stored = self._convert(Checkpoint(local, self.where), quantization, ctx)
        for got in fetched.values():  # consumed; on failure they stay, so a retry resumes them
            if not got.from_cache:
                got.path.unlink(missing_ok=True)
        hashes = {name: got.sha256 for name, got in fetched.items()}
        return Fetched(stored.digest, self.base | {"files": hashes} | stored.provenance)

    def folder(self, folder: Path, ctx: FetchContext) -> Fetched:
        """A snapshot already on disk (the hub client's cache, used offline)."""
        names = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
        if model_files(names):
            path = pick_gguf(names, self.tag, self.repo_id)
            return self.store_gguf(folder / path, None, path, ctx)
        if not has_weights(names):
            raise SourceError(no_weights_message(self.where, names))
        ckpt = Checkpoint({n: folder / n for n in names}, self.where)
        return self._convert(ckpt, self._quantization(ctx), ctx)

    def _quantization(self, ctx: FetchContext) -> str:
        return check_quantization(self.tag or ctx.quantization or DEFAULT_QUANTIZATION)

    def _convert(self, ckpt: Checkpoint, quantization: str, ctx: FetchContext) -> Fetched:
        """Convert and quantize; the provenance is the source's, then the conversion's."""
        stored = store_checkpoint(
            ckpt, Sink(ctx.blobs, ctx.progress, ctx.cancel), quantization,
            name=self.repo_id.split("/")[1], repo=self.hf_repo,
        )  # fmt: skip
        extra = stored.provenance | {"sha256": _hex(stored.digest)}
        return Fetched(stored.digest, self.base | extra)


def _hex(digest: str) -> str:
    return digest.removeprefix("sha256:")


def read_json(path: Path, where: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SourceError(f"{where}: {path.name} is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise SourceError(f"{where}: {path.name} is not a JSON object")
    return data
