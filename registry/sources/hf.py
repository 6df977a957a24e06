"""Hugging Face repositories: `hf://org/repo[@revision][/file.gguf | :QUANT]` and Ollama's
`hf.co/org/repo[:QUANT]` (also `huggingface.co/...`).

- A named `.gguf` file is fetched as is.
- A repository of GGUF files: the file of the requested quantization (Q4_K_M unless
  `:QUANT` says otherwise; `:<file name>` works too); a missing one is reported with
  the quantizations the repository has.
- A safetensors checkpoint (single file or sharded): config.json is fetched first and
  its architecture checked, then the tokenizer files and weights; the checkpoint is
  converted and quantized (`:QUANT`, else the recipe's quantization, else Q4_K_M;
  `:F16`/`:BF16` keep it unquantized).
Every file is downloaded resumably and verified (hf_hub.py). Offline, files already in
the user's HF cache are used.
"""

from __future__ import annotations

import contextlib
import json
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from corral.registry.errors import SourceError, SourceUnreachable, shown
from corral.registry.gguf_info import check_gguf
from corral.registry.names import DEFAULT_TAG, ModelName, slug
from corral.registry.progress import PullProgress
from corral.registry.sources.base import FetchContext, Fetched
from corral.registry.sources.hf_hub import Hub, LocalCopy, RemoteFile, endpoint, host
from corral.registry.sources.hf_pick import model_files, pick_gguf

HOST = "hf.co"
PREFIXES = ("hf://", "hf.co/", "huggingface.co/")
_REPO = r"(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)"
_SPEC = re.compile(
    r"(?P<prefix>hf://|(?:https?://)?(?:hf\.co|huggingface\.co)/)" + _REPO
    + r"(?:@(?P<revision>[\w.%-]+))?(?:/(?P<file>[^@:]+)|:(?P<tag>[\w.-]+))?"
)  # fmt: skip


def is_hf_name(text: str) -> bool:
    """True for Ollama's `hf.co/org/repo[:QUANT]` (and `huggingface.co/...`)."""
    return text.strip().lower().startswith(PREFIXES[1:])


@dataclass(frozen=True)
class HfSource:
    spec: str
    repo_id: str
    filename: str | None = None  # an explicit .gguf file
    revision: str | None = None
    tag: str | None = None  # a quantization or a file name

    @classmethod
    def parse(cls, spec: str) -> HfSource:
        m = _SPEC.fullmatch(spec.strip())
        if m is None or (m["file"] and (".." in m["file"].split("/") or m["file"].startswith("/"))):
            raise SourceError(
                f"bad Hugging Face source '{shown(spec)}': write hf://org/repo[:QUANT], "
                "hf://org/repo[@revision]/file.gguf or hf.co/org/repo[:QUANT]"
            )
        if m["file"] and not m["file"].lower().endswith(".gguf"):
            raise SourceError(
                f"hf source '{shown(spec)}': name a .gguf file, or the repository itself "
                "(hf://org/repo) to convert its safetensors checkpoint"
            )
        revision = urllib.parse.unquote(m["revision"]) if m["revision"] else None
        return cls(spec.strip(), m["repo"], m["file"], revision, m["tag"])

    def default_name(self) -> ModelName:
        org, repo = self.repo_id.split("/")
        if self.filename is not None:
            stem = Path(self.filename).name.removesuffix(".gguf").removesuffix(".GGUF")
            return ModelName(HOST, slug(org), slug(repo), slug(stem))
        return ModelName(HOST, slug(org), slug(repo), slug(self.tag) if self.tag else DEFAULT_TAG)

    def describe(self) -> str:
        return host()

    def fetch(self, ctx: FetchContext) -> Fetched:
        hub = Hub(self.repo_id, self.revision)
        if self.filename is not None:
            return self._named_file(hub, ctx)
        try:
            commit = hub.commit()
            files = hub.files(commit)
        except SourceUnreachable:
            offline = _offline_snapshot(self.repo_id, self.revision)
            if offline is None:
                raise
            return self._from_folder(offline, ctx)
        where = f"{self.repo_id}@{commit[:12]}"
        if model_files(files):
            path = pick_gguf(files, self.tag, self.repo_id)
            return self._gguf(hub, files[path], commit, ctx)
        if has_weights(files):
            return self._checkpoint(hub, files, commit, ctx)
        raise SourceError(no_weights_message(where, list(files)))

    # --- GGUF files ---------------------------------------------------------------------

    def _named_file(self, hub: Hub, ctx: FetchContext) -> Fetched:
        assert self.filename is not None
        try:
            f, commit, location = hub.file_metadata(self.filename, self.revision)
        except SourceUnreachable:
            cached = _cached_file(self.repo_id, self.filename, self.revision)
            if cached is None:
                raise
            return self._store_gguf(cached, None, self.filename, self.revision or "main", ctx)
        return self._gguf(hub, f, commit, ctx, location)

    def _gguf(
        self, hub: Hub, f: RemoteFile, commit: str, ctx: FetchContext, location: str | None = None
    ) -> Fetched:
        got = hub.fetch(f, commit, ctx, location)
        try:
            return self._store_gguf(got.path, got.sha256, f.path, commit, ctx)
        finally:
            if not got.from_cache:
                got.path.unlink(missing_ok=True)

    def _store_gguf(
        self, path: Path, sha: str | None, name: str, commit: str, ctx: FetchContext
    ) -> Fetched:
        size = path.stat().st_size
        status = f"copying {Path(name).name}"
        digest = ctx.blobs.put_file(
            path,
            expected=f"sha256:{sha}" if sha else None,
            check=lambda tmp: check_gguf(tmp, f"{self.spec} is not a usable GGUF file"),
            progress=lambda done: ctx.progress(PullProgress(status, total=size, completed=done)),
            cancel=ctx.cancel,
        )
        return Fetched(digest, self._provenance(commit) | {"file": name, "sha256": _hex(digest)})

    # --- safetensors checkpoints -----------------------------------------------------------

    def _checkpoint(
        self, hub: Hub, files: dict[str, RemoteFile], commit: str, ctx: FetchContext
    ) -> Fetched:
        quantization = check_quantization(self.tag or ctx.quantization or DEFAULT_QUANTIZATION)
        where = f"{self.repo_id}@{commit[:12]}"
        if CONFIG not in files:
            raise SourceError(f"{where} has no {CONFIG}, so it is not a transformers model")
        local: dict[str, Path] = {}
        fetched: list[LocalCopy] = []

        def get(name: str) -> Path:
            if name not in files:
                raise SourceError(f"{where}: {name} is missing")
            got = hub.fetch(files[name], commit, ctx)
            fetched.append(got)
            local[name] = got.path
            return got.path

        architecture_of(_read_json(get(CONFIG), where), where)  # before the weights
        for name in metadata_files(files)[1:]:
            get(name)
        shards = shard_names(_read_json(get(INDEX), where), where) if INDEX in files else [SINGLE]
        for name in shards:
            get(name)
        stored = store_checkpoint(
            Checkpoint(local, where), Sink(ctx.blobs, ctx.progress, ctx.cancel), quantization,
            name=self.repo_id.split("/")[1], repo=self.repo_id,
        )  # fmt: skip
        for got in fetched:  # consumed; on failure they stay, so a retry resumes or reuses them
            if not got.from_cache:
                got.path.unlink(missing_ok=True)
        hashes = {name: got.sha256 for name, got in zip(local, fetched, strict=True)}
        provenance = self._provenance(commit) | {"files": hashes} | stored.provenance
        return Fetched(stored.digest, provenance | {"sha256": _hex(stored.digest)})

    def _from_folder(self, folder: Path, ctx: FetchContext) -> Fetched:
        """Offline: a snapshot already in the HF cache."""
        names = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
        commit = folder.name
        if model_files(names):
            path = pick_gguf(names, self.tag, self.repo_id)
            return self._store_gguf(folder / path, None, path, commit, ctx)
        if not has_weights(names):
            raise SourceError(no_weights_message(f"{self.repo_id} (HF cache)", names))
        quantization = check_quantization(self.tag or ctx.quantization or DEFAULT_QUANTIZATION)
        ckpt = Checkpoint({n: folder / n for n in names}, f"{self.repo_id} (HF cache)")
        stored = store_checkpoint(
            ckpt, Sink(ctx.blobs, ctx.progress, ctx.cancel), quantization,
            name=self.repo_id.split("/")[1], repo=self.repo_id,
        )  # fmt: skip
        return Fetched(stored.digest, self._provenance(commit) | stored.provenance)

    def _provenance(self, commit: str) -> dict[str, Any]:
        return {
            "source": self.spec,
            "kind": "huggingface",
            "endpoint": endpoint(),
            "repo": self.repo_id,
            "revision": commit,
        }


def _hex(digest: str) -> str:
    return digest.removeprefix("sha256:")


def _read_json(path: Path, where: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SourceError(f"{where}: {path.name} is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise SourceError(f"{where}: {path.name} is not a JSON object")
    return data


def _cached_file(repo_id: str, filename: str, revision: str | None) -> Path | None:
    import huggingface_hub as hf

    with contextlib.suppress(Exception):
        return Path(hf.hf_hub_download(repo_id, filename, revision=revision, local_files_only=True))
    return None


def _offline_snapshot(repo_id: str, revision: str | None) -> Path | None:
    import huggingface_hub as hf

    with contextlib.suppress(Exception):
        return Path(hf.snapshot_download(repo_id, revision=revision, local_files_only=True))
    return None
