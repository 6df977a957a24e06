"""ModelScope repositories: `ms://org/repo[@revision][/file.gguf | :QUANT]` and Ollama's
`modelscope.cn/org/repo[:QUANT]`, through the modelscope client.

Exactly as for Hugging Face (hf.py): a named `.gguf` file is fetched as is; a repository
is a GGUF repository (the requested quantization, Q4_K_M by default) or a safetensors
checkpoint (converted and quantized), as hub_repo.py says. `@revision` is a branch or a
tag (`master` by default). Every file is downloaded resumably and verified by the sha256
the hub lists (ms_hub.py). Offline, a snapshot in the user's ModelScope cache is used.
Installed names are `modelscope.cn/org/repo:tag`, as Ollama names them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.registry.errors import SourceError, SourceUnreachable
from corral.registry.sources.base import FetchContext, Fetched
from corral.registry.sources.hub_repo import RepoBlob, RepoSource
from corral.registry.sources.ms_hub import MsHub, host

HOST = "modelscope.cn"
PREFIXES = ("ms://", "modelscope.cn/")
_PREFIX = r"ms://|(?:https?://)?modelscope\.cn/"
_USAGE = "write ms://org/repo[:QUANT], ms://org/repo[@revision]/file.gguf or modelscope.cn/org/repo"


def is_ms_name(text: str) -> bool:
    """True for Ollama's `modelscope.cn/org/repo[:QUANT]`."""
    return text.strip().lower().startswith(PREFIXES[1:])


@dataclass(frozen=True)
class MsSource(RepoSource):
    hub, scheme, prefix, usage, name_host = "ModelScope", "ms", _PREFIX, _USAGE, HOST

    def describe(self) -> str:
        return host()

    def fetch(self, ctx: FetchContext) -> Fetched:
        hub = MsHub(self.repo_id, self.revision)
        try:
            revision = hub.resolve()
            files = hub.files(revision)
        except SourceUnreachable:
            folder = hub.cached_snapshot()
            if folder is None or (self.filename and not (folder / self.filename).is_file()):
                raise
            return self._offline(hub, folder, ctx)
        blob = self._blob(f"{self.repo_id}@{revision}", hub.endpoint, revision)
        if self.filename is None:
            return blob.from_listing(hub, files, revision, ctx)
        f = files.get(self.filename)
        if f is None:
            raise SourceError(f"{self.filename} not found in {blob.where} on {host(hub.endpoint)}")
        if (stored := blob.stored(f.sha256, f.path, ctx)) is not None:
            return stored
        return blob.gguf(hub.fetch(f, revision, ctx), f.path, ctx)

    def is_current(self, recorded: dict[str, Any]) -> bool:
        """Whether the files the installed model was made from are still those of the
        revision (ModelScope names a revision, not its commit: their sha256s tell)."""
        hub = MsHub(self.repo_id, self.revision)
        listed = {path: f.sha256 for path, f in hub.files(hub.resolve()).items()}
        made_from = recorded.get("files") or {recorded.get("file"): recorded.get("sha256")}
        return all(listed.get(path) == sha for path, sha in made_from.items())

    def _offline(self, hub: MsHub, folder: Path, ctx: FetchContext) -> Fetched:
        """The hub is unreachable: the snapshot the modelscope client left in its cache."""
        where = f"{self.repo_id} (ModelScope cache)"
        blob = self._blob(where, hub.known_endpoint(), self.revision or folder.name)
        if self.filename is not None:
            return blob.store_gguf(folder / self.filename, None, self.filename, ctx)
        return blob.folder(folder, ctx)

    def _blob(self, where: str, endpoint: str, revision: str) -> RepoBlob:
        provenance = self._provenance(endpoint, revision)
        return RepoBlob(self.spec, self.repo_id, where, self.tag, provenance)

    def _provenance(self, endpoint: str, revision: str) -> dict[str, Any]:
        return {
            "source": self.spec,
            "kind": "modelscope",
            "endpoint": endpoint,
            "repo": self.repo_id,
            "revision": revision,
        }
