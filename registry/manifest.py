"""The manifest of an installed model: a Modelfile-like YAML document.

Loaded with `yaml.safe_load` only, written atomically (temporary file, fsync,
rename). A file that does not parse or breaks the schema raises CorruptModel
naming the file and the check that failed.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from corral.registry.blobs import fsync_dir, is_digest
from corral.registry.errors import CorruptModel

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Manifest:
    """Which blob a model is, what it is, where it came from and how to run it."""

    name: str
    model: str  # blob digest "sha256:<hex>" of the GGUF
    format: str = "gguf"
    architecture: str = ""
    parameter_count: int = 0
    quantization: str = ""
    context_length: int = 0
    source: dict[str, Any] = field(default_factory=dict)  # provenance
    parameters: dict[str, Any] = field(default_factory=dict)  # stop, temperature, ...
    template: str | None = None  # None: the GGUF's own chat template
    system: str | None = None
    license: str | None = None
    messages: list[dict[str, str]] = field(default_factory=list)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def blobs(self) -> set[str]:
        """Every blob digest this manifest keeps alive."""
        return {self.model}

    @property
    def parameter_size(self) -> str:
        """Parameter count for display, as Ollama shows it: '134.52M', '1.5B'."""
        n = self.parameter_count
        for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
            if n >= div:
                return f"{n / div:.2f}".rstrip("0").rstrip(".") + unit
        return str(n)

    def renamed(self, name: str) -> Manifest:
        return replace(self, name=name)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
        for f in fields(self):
            out[f.name] = getattr(self, f.name)
        out["created_at"] = self.created_at.isoformat()
        return out

    def to_yaml(self) -> str:
        return yaml.dump(self.to_dict(), Dumper=_Dumper, sort_keys=False, allow_unicode=True)

    @classmethod
    def from_yaml(cls, text: str, origin: str | Path = "<manifest>") -> Manifest:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            problem = str(e).replace("\n", " ")
            raise CorruptModel(f"manifest {origin} is not valid YAML: {problem}") from None
        return cls.from_dict(data, origin)

    @classmethod
    def from_dict(cls, data: Any, origin: str | Path = "<manifest>") -> Manifest:
        if not isinstance(data, dict):
            raise CorruptModel(f"manifest {origin} is not a YAML mapping")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise CorruptModel(
                f"manifest {origin} has schema_version {version!r}; this corral reads "
                f"{SCHEMA_VERSION} (upgrade corral, or replace the model)"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known - {"schema_version"})
        if unknown:
            raise CorruptModel(f"manifest {origin} has unknown field(s): {', '.join(unknown)}")
        values = {k: v for k, v in data.items() if k in known}
        for problem in _problems(values):
            raise CorruptModel(f"manifest {origin}: {problem}")
        values["created_at"] = _parse_time(values.get("created_at"), origin)
        return cls(**values)

    @classmethod
    def load(cls, path: Path) -> Manifest:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise CorruptModel(f"manifest {path} cannot be read: {e}") from None
        return cls.from_yaml(text, path)

    def save(self, path: Path) -> None:
        write_atomic(Path(path), self.to_yaml().encode("utf-8"))


# field -> (accepted types, required)
_SCHEMA: dict[str, tuple[tuple[type, ...], bool]] = {
    "name": ((str,), True),
    "model": ((str,), True),
    "format": ((str,), False),
    "architecture": ((str,), False),
    "parameter_count": ((int,), False),
    "quantization": ((str,), False),
    "context_length": ((int,), False),
    "source": ((dict,), False),
    "parameters": ((dict,), False),
    "template": ((str, type(None)), False),
    "system": ((str, type(None)), False),
    "license": ((str, type(None)), False),
    "messages": ((list,), False),
    "created_at": ((str, datetime), False),
}


def _problems(values: dict[str, Any]) -> list[str]:
    out = []
    for key, (types, required) in _SCHEMA.items():
        if key not in values:
            if required:
                out.append(f"missing field '{key}'")
            continue
        value = values[key]
        if not isinstance(value, types) or (int in types and isinstance(value, bool)):
            out.append(f"field '{key}' has the wrong type ({type(value).__name__})")
    if "model" in values and isinstance(values["model"], str) and not is_digest(values["model"]):
        out.append(f"field 'model' is not a sha256 digest: {values['model']!r}")
    for m in values.get("messages") or []:
        if not is_message(m):
            out.append("each message needs a 'role' and a 'content' string")
            break
    return out


def is_message(m: object) -> bool:
    """A chat message: a mapping with string 'role' and 'content'."""
    return isinstance(m, dict) and all(isinstance(m.get(k), str) for k in ("role", "content"))


def _parse_time(value: Any, origin: str | Path) -> datetime:
    if value is None:
        return datetime.fromtimestamp(0, UTC)
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise CorruptModel(f"manifest {origin}: created_at {value!r} is not a timestamp") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class _Dumper(yaml.SafeDumper):
    """SafeDumper that writes multi-line strings (templates) as literal blocks."""


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_representer)


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so readers see the old file or the new one, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    fsync_dir(path.parent)
