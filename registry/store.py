"""The model store under a home folder: installed models, their manifests and blobs.

    home/blobs/sha256-<hex>                                  content-addressed files
    home/manifests/<host>/<namespace>/<model>/<tag>.yaml     one per installed name

One process (the daemon) writes a home; within it the store is thread-safe. Whoever
holds blobs in memory (the daemon's loaded models) can be told which blobs a garbage
collection removed (`on_collect`): a model whose last name was deleted, or replaced
by a create or a pull, is then unloaded rather than kept for its keep_alive.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from corral.registry.blobs import BlobStore
from corral.registry.errors import CorruptModel, InvalidName, ModelNotFound
from corral.registry.manifest import Manifest
from corral.registry.names import ModelName

log = logging.getLogger(__name__)

_DIGEST_IN_TEXT = re.compile(r"sha256[:-]([0-9a-f]{64})")
Collected = Callable[[list[str]], None]  # the digests of the blobs a gc removed


@dataclass(frozen=True)
class InstalledModel:
    name: str  # display form, e.g. "smollm2:135m"
    manifest: Manifest
    model_path: Path  # the GGUF blob
    digest: str  # "sha256:<hex>"
    size: int
    modified_at: datetime


class Store:
    def __init__(self, home: Path, on_collect: Collected | None = None) -> None:
        self.home = Path(home)
        self.on_collect = on_collect  # called in the thread that collected
        self.blobs = BlobStore(self.home / "blobs")
        self.manifests = self.home / "manifests"
        self.manifests.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()

    def list(self) -> list[InstalledModel]:
        """Installed models, newest first. Unreadable manifests are logged and skipped."""
        found = []
        for name, path in self._manifest_files():
            try:
                found.append(self._installed(name, path))
            except CorruptModel as e:
                log.warning("skipping %s: %s", path, e)
        return sorted(found, key=lambda m: m.modified_at, reverse=True)

    def resolve(self, name: str) -> InstalledModel:
        """The installed model called `name`; InvalidName / ModelNotFound / CorruptModel."""
        model = self.find(ModelName.parse(name))
        if model is None:
            raise ModelNotFound(name.strip())
        return model

    def find(self, name: ModelName) -> InstalledModel | None:
        path = name.manifest_path(self.home)
        if not path.is_file():
            return None
        return self._installed(name, path)

    def commit(self, name: ModelName, manifest: Manifest) -> InstalledModel:
        """Install `manifest` under `name` (replacing what was there); its blob must be stored."""
        with self._lock:
            for digest in manifest.blobs:
                if not self.blobs.exists(digest):
                    raise CorruptModel(f"cannot install {name}: blob {digest} is missing")
            path = name.manifest_path(self.home)
            replacing = path.is_file()
            manifest.renamed(str(name)).save(path)
            if replacing:  # the blob of the model it replaced may now be garbage
                self.gc()
            return self._installed(name, path)

    def delete(self, name: str) -> None:
        """Remove the manifest of `name`, then collect blobs nothing references."""
        parsed = ModelName.parse(name)
        with self._lock:
            path = parsed.manifest_path(self.home)
            if not path.is_file():
                raise ModelNotFound(name.strip())
            path.unlink()
            self._prune_empty_dirs(path.parent)
            self.gc()

    def copy(self, src: str, dst: str) -> InstalledModel:
        """Install the model `src` under the name `dst` too (same blob)."""
        source = self.resolve(src)
        return self.commit(ModelName.parse(dst), source.manifest)

    def collect_at_startup(self) -> list[str]:
        """`gc`, and every temporary file: for the daemon, the store's one owner."""
        self.blobs.remove_temporaries()
        return self.gc()

    def gc(self) -> list[str]:
        """Remove blobs that no manifest references (a blob being pulled is pinned)."""
        with self._lock:
            removed = self.blobs.gc(self._referenced())
        if removed and self.on_collect is not None:
            self.on_collect(removed)
        return removed

    def _referenced(self) -> set[str]:
        referenced: set[str] = set()
        for _name, path in self._manifest_files():
            try:
                referenced |= Manifest.load(path).blobs
            except CorruptModel as e:
                # Unreadable: keep every blob it might mention rather than lose data.
                log.warning("%s; keeping the blobs it mentions", e)
                with contextlib.suppress(OSError):
                    text = path.read_text(encoding="utf-8", errors="replace")
                    referenced |= {f"sha256:{h}" for h in _DIGEST_IN_TEXT.findall(text)}
        return referenced

    def _manifest_files(self) -> list[tuple[ModelName, Path]]:
        out = []
        for path in self.manifests.glob("*/*/*/*.yaml"):
            host, namespace, model = path.relative_to(self.manifests).parts[:3]
            text = f"{host}/{namespace}/{model}:{path.stem}"
            try:
                name = ModelName.parse(text)
            except InvalidName:  # a stray file that no name maps to
                log.warning("ignoring %s: not a valid model name", path)
                continue
            if name.manifest_path(self.home) == path.resolve():
                out.append((name, path))
        return out

    def _installed(self, name: ModelName, path: Path) -> InstalledModel:
        try:
            manifest = Manifest.load(path)
        except CorruptModel as e:
            raise CorruptModel(
                f"{e}; remove it with `corral rm {name}`, then pull or create it again"
            ) from None
        blob = self.blobs.path(manifest.model)
        try:
            size = blob.stat().st_size
            modified = path.stat().st_mtime
        except FileNotFoundError:
            raise CorruptModel(
                f"model {name}: its file {blob.name} is missing; pull or create {name} again"
            ) from None
        return InstalledModel(
            name=str(name),
            manifest=manifest,
            model_path=blob,
            digest=manifest.model,
            size=size,
            modified_at=datetime.fromtimestamp(modified, UTC),
        )

    def _prune_empty_dirs(self, folder: Path) -> None:
        root = self.manifests.resolve()
        folder = folder.resolve()
        while folder != root and folder.is_relative_to(root):
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent
