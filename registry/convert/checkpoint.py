"""A Hugging Face checkpoint: which files make one, and reading them from disk.

A checkpoint is a set of repository files (config.json, tokenizer files,
`model.safetensors` or `model.safetensors.index.json` plus its shards), each
available as a local path: a folder on disk, or files fetched from a hub (which
may live in different places: the HF cache, partial-download files).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from corral.registry.convert.safetensors import SafeTensor, SafetensorsFile
from corral.registry.errors import CorruptModel, SourceError

CONFIG = "config.json"
SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
# Besides config and weights, files conversion reads when the repository has them.
SIDE_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
    "README.md",  # the model card: its front matter names the license
)
OTHER_WEIGHTS = (".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx")


def has_weights(names: Collection[str]) -> bool:
    return SINGLE in names or INDEX in names


def no_weights_message(where: str, names: Collection[str]) -> str:
    """The one line for a repository or folder that holds nothing corral can convert."""
    others = sorted(n for n in names if n.endswith(OTHER_WEIGHTS))
    if others:
        return (
            f"{where} has weights only as {others[0]} (and {len(others) - 1} more); corral "
            "converts safetensors checkpoints and GGUF files only"
        )
    shown = ", ".join(sorted(names)[:8]) or "no files"
    return (
        f"{where} has no model weights: no .gguf file and no {SINGLE} or {INDEX} "
        f"(it holds: {shown})"
    )


def shard_names(index: Mapping[str, Any], where: str) -> list[str]:
    """The shard files an index names, in order."""
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CorruptModel(f"{where}: {INDEX} has no weight_map")
    shards = sorted({str(v) for v in weight_map.values()})
    for s in shards:
        if "/" in s or "\\" in s or s.startswith(".") or not s.endswith(".safetensors"):
            raise CorruptModel(f"{where}: {INDEX} names a bad shard file {s!r}")
    return shards


def metadata_files(names: Collection[str]) -> list[str]:
    """config.json and the tokenizer/template files present among `names`."""
    return [CONFIG, *(n for n in SIDE_FILES if n in names)]


@dataclass(frozen=True)
class Checkpoint:
    """Repository file name -> local path, and where it came from (for messages)."""

    files: Mapping[str, Path]
    where: str

    @classmethod
    def from_folder(cls, folder: Path) -> Checkpoint:
        folder = Path(folder)
        names = {p.name: p for p in folder.iterdir() if p.is_file()}
        return cls(names, str(folder))

    def path(self, name: str) -> Path | None:
        return self.files.get(name)

    def json(self, name: str) -> dict[str, Any] | None:
        """A JSON file of the checkpoint, or None when absent."""
        path = self.path(name)
        if path is None:
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CorruptModel(f"{self.where}: {name} cannot be read as JSON ({e})") from None
        if not isinstance(data, dict):
            raise CorruptModel(f"{self.where}: {name} is not a JSON object")
        return data

    def config(self) -> dict[str, Any]:
        config = self.json(CONFIG)
        if config is None:
            raise SourceError(f"{self.where} has no {CONFIG}, so it is not a transformers model")
        return config

    def text(self, name: str) -> str | None:
        path = self.path(name)
        return None if path is None else path.read_text(encoding="utf-8")

    def license(self) -> str | None:
        """The `license:` of the model card's YAML front matter, if any."""
        text = self.text("README.md") or ""
        m = re.match(r"---\s*\n(.*?)\n---\s*(\n|$)", text, re.DOTALL)
        if m is None:
            return None
        try:
            card = yaml.safe_load(m[1])
        except yaml.YAMLError:
            return None
        found = card.get("license") if isinstance(card, dict) else None
        return found if isinstance(found, str) and found else None

    def weight_files(self) -> list[str]:
        index = self.json(INDEX)
        if index is not None:
            shards = shard_names(index, self.where)
            missing = [s for s in shards if s not in self.files]
            if missing:
                raise SourceError(f"{self.where}: shard {missing[0]} named by {INDEX} is missing")
            return shards
        if SINGLE in self.files:
            return [SINGLE]
        raise SourceError(no_weights_message(self.where, list(self.files)))

    @contextmanager
    def open_weights(self) -> Iterator[Weights]:
        with ExitStack() as stack:
            opened = {
                name: stack.enter_context(SafetensorsFile.open(self.files[name]))
                for name in self.weight_files()
            }
            yield Weights(opened)


class Weights:
    """Every tensor of every shard, by name."""

    def __init__(self, files: Mapping[str, SafetensorsFile]) -> None:
        self.files = dict(files)
        self.where: dict[str, SafetensorsFile] = {}
        for f in self.files.values():
            for name in f.tensors:
                if name in self.where:
                    raise CorruptModel(f"tensor {name} appears in two shards")
                self.where[name] = f

    def __contains__(self, name: object) -> bool:
        return name in self.where

    def names(self) -> list[str]:
        return list(self.where)

    def info(self, name: str) -> SafeTensor:
        return self.where[name].tensors[name]

    def raw(self, name: str) -> Any:
        return self.where[name].raw(name)

    def release(self, name: str) -> None:
        self.where[name].release(name)
