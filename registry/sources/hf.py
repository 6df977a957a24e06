"""Hugging Face repositories: `hf://org/repo[@revision][/file.gguf | :QUANT]` and Ollama's
`hf.co/org/repo[:QUANT]` (also `huggingface.co/...`).

A named `.gguf` file is fetched as is; a repository is a GGUF repository (the requested
quantization) or a safetensors checkpoint (converted and quantized), as hub_repo.py says.
Every file is downloaded resumably and verified (hf_hub.py). Offline, files already in
the user's HF cache are used.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.registry.errors import SourceUnreachable
from corral.registry.sources.base import FetchContext, Fetched
from corral.registry.sources.hf_hub import Hub, endpoint, host
from corral.registry.sources.hub_repo import RepoBlob, RepoSource

HOST = "hf.co"
PREFIXES = ("hf://", "hf.co/", "huggingface.co/")
_PREFIX = r"hf://|(?:https?://)?(?:hf\.co|huggingface\.co)/"
_USAGE = "write hf://org/repo[:QUANT], hf://org/repo[@revision]/file.gguf or hf.co/org/repo[:QUANT]"


def is_hf_name(text: str) -> bool:
    """True for Ollama's `hf.co/org/repo[:QUANT]` (and `huggingface.co/...`)."""
    return text.strip().lower().startswith(PREFIXES[1:])


@dataclass(frozen=True)
class HfSource(RepoSource):
    hub, scheme, prefix, usage, name_host = "Hugging Face", "hf", _PREFIX, _USAGE, HOST

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
            return self._blob(f"{self.repo_id} (HF cache)", offline.name).folder(offline, ctx)
        return self._blob(f"{self.repo_id}@{commit[:12]}", commit).from_listing(
            hub, files, commit, ctx
        )

    def _named_file(self, hub: Hub, ctx: FetchContext) -> Fetched:
        assert self.filename is not None
        try:
            f, commit, location = hub.file_metadata(self.filename, self.revision)
        except SourceUnreachable:
            cached = _cached_file(self.repo_id, self.filename, self.revision)
            if cached is None:
                raise
            blob = self._blob(self.repo_id, self.revision or "main")
            return blob.store_gguf(cached, None, self.filename, ctx)
        blob = self._blob(f"{self.repo_id}@{commit[:12]}", commit)
        if (stored := blob.stored(f.sha256, f.path, ctx)) is not None:
            return stored
        return blob.gguf(hub.fetch(f, commit, ctx, location), f.path, ctx)

    def is_current(self, recorded: dict[str, Any]) -> bool:
        """Whether the source's revision (the default branch if none) still points to the
        commit the installed model was pulled from."""
        return Hub(self.repo_id, self.revision).commit() == recorded.get("revision")

    def _blob(self, where: str, commit: str) -> RepoBlob:
        return RepoBlob(
            self.spec, self.repo_id, where, self.tag, self._provenance(commit), self.repo_id
        )

    def _provenance(self, commit: str) -> dict[str, Any]:
        return {
            "source": self.spec,
            "kind": "huggingface",
            "endpoint": endpoint(),
            "repo": self.repo_id,
            "revision": commit,
        }


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
