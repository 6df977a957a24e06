"""A GGUF file on this machine: `/abs/model.gguf`, `./model.gguf`, `~/m.gguf`,
any path ending in `.gguf`, or a `file://` URL; or a folder holding a Hugging Face
safetensors checkpoint (config.json, tokenizer, weights), which is converted and
quantized (the recipe's quantization, else Q4_K_M) like a hub checkpoint.

The file is checked to be a complete GGUF before it is copied, and the copy is
checked again before it becomes a blob. Relative paths are resolved against
the current directory of the process that parses them.
"""

from __future__ import annotations

import os
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from corral.registry.convert.checkpoint import CONFIG, Checkpoint
from corral.registry.convert.pipeline import DEFAULT_QUANTIZATION, Sink, store_checkpoint
from corral.registry.errors import SourceError, shown
from corral.registry.gguf_info import check_gguf
from corral.registry.names import DEFAULT_HOST, DEFAULT_NAMESPACE, DEFAULT_TAG, ModelName, slug
from corral.registry.progress import PullProgress
from corral.registry.sources.base import FetchContext, Fetched

PATH_PREFIXES = ("/", "./", "~/")  # "../x" stays a (bad) name; "../x.gguf" is a path


def looks_like_path(text: str) -> bool:
    """True for text naming a local file rather than a model name."""
    text = text.strip()
    return text.startswith(PATH_PREFIXES) or text.lower().endswith(".gguf") or text == "~"


@dataclass(frozen=True)
class LocalSource:
    spec: str
    path: Path

    @classmethod
    def parse(cls, spec: str) -> LocalSource:
        text = spec.strip()
        if text.startswith("file:"):
            text = urllib.request.url2pathname(urllib.parse.urlsplit(text).path)
        if not text:
            raise SourceError(f"local source '{shown(spec)}' names no file")
        return cls(spec=spec, path=Path(os.path.abspath(Path(text).expanduser())))

    def default_name(self) -> ModelName:
        stem = self.path.name.removesuffix(".gguf").removesuffix(".GGUF")
        return ModelName(DEFAULT_HOST, DEFAULT_NAMESPACE, slug(stem), DEFAULT_TAG)

    def describe(self) -> str:
        return str(self.path)

    def fetch(self, ctx: FetchContext) -> Fetched:
        if self.path.is_dir():
            return self._checkpoint(ctx)
        if not self.path.is_file():
            raise SourceError(f"file {self.path} not found")
        if not os.access(self.path, os.R_OK):
            raise SourceError(f"file {self.path} is not readable (check its permissions)")
        check_gguf(self.path, f"{self.path} is not a usable GGUF file")
        size = self.path.stat().st_size
        status = f"copying {self.path.name}"
        ctx.progress(PullProgress(status, total=size, completed=0))
        digest = ctx.blobs.put_file(
            self.path,
            check=lambda tmp: check_gguf(tmp, f"{self.path} changed while copying"),
            progress=lambda done: ctx.progress(PullProgress(status, total=size, completed=done)),
            cancel=ctx.cancel,
        )
        provenance = {
            "source": self.spec,
            "kind": "local",
            "path": str(self.path),
            "sha256": digest.removeprefix("sha256:"),
            "size": size,
        }
        return Fetched(digest, provenance)

    def _checkpoint(self, ctx: FetchContext) -> Fetched:
        if not (self.path / CONFIG).is_file():
            raise SourceError(
                f"{self.path} is a folder but not a safetensors checkpoint (no {CONFIG}); "
                "name a .gguf file or a checkpoint folder"
            )
        stored = store_checkpoint(
            Checkpoint.from_folder(self.path),
            Sink(ctx.blobs, ctx.progress, ctx.cancel),
            ctx.quantization or DEFAULT_QUANTIZATION,
            name=self.path.name,
        )
        provenance = {"source": self.spec, "kind": "local", "path": str(self.path)}
        return Fetched(
            stored.digest, provenance | stored.provenance | {"sha256": stored.digest[7:]}
        )
