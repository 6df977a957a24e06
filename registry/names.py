"""Model names: Ollama's grammar `[host/][namespace/]model[:tag]`.

Names are compared case-insensitively, so they are lowercased when parsed and
stored lowercased on disk. Every part is checked against a conservative
character set before it becomes a directory name, so no name can reach
outside the manifests folder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from corral.registry.errors import InvalidName

DEFAULT_HOST = "registry.corral.local"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
MAX_NAME_LENGTH = 255

# part -> (pattern, max length); patterns apply to the lowercased text.
_PART = r"[a-z0-9][a-z0-9._-]*"
_RULES: dict[str, tuple[re.Pattern[str], int]] = {
    "host": (re.compile(r"[a-z0-9][a-z0-9.-]*(:[0-9]{1,5})?"), 253),
    "namespace": (re.compile(_PART), 128),
    "model": (re.compile(_PART), 128),
    "tag": (re.compile(_PART), 128),
}
_CHARSET_HINT = {
    "host": "letters, digits, '.', '-' and an optional :port",
    "namespace": "letters, digits, '.', '_', '-', starting with a letter or digit",
    "model": "letters, digits, '.', '_', '-', starting with a letter or digit",
    "tag": "letters, digits, '.', '_', '-', starting with a letter or digit",
}


@dataclass(frozen=True)
class ModelName:
    """A validated, lowercased model name. `str()` gives the short display form."""

    host: str
    namespace: str
    model: str
    tag: str

    @classmethod
    def parse(cls, text: str) -> ModelName:
        name = text.strip()
        if not name:
            raise InvalidName(text, "the name is empty")
        if len(name) > MAX_NAME_LENGTH:
            raise InvalidName(text, f"longer than {MAX_NAME_LENGTH} characters")
        if "\\" in name:
            raise InvalidName(text, "'\\' is not allowed")
        path, tag = _split_tag(name)
        parts = path.split("/")
        if len(parts) > 3:
            raise InvalidName(text, f"{len(parts)} '/'-separated parts, at most 3 are allowed")
        host, namespace, model = [DEFAULT_HOST, DEFAULT_NAMESPACE][: 3 - len(parts)] + parts
        fields = {"host": host, "namespace": namespace, "model": model, "tag": tag}
        for kind, value in fields.items():
            _check_part(text, kind, value)
        return cls(**{k: v.lower() for k, v in fields.items()})

    def __str__(self) -> str:
        if self.host != DEFAULT_HOST:
            return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"
        if self.namespace != DEFAULT_NAMESPACE:
            return f"{self.namespace}/{self.model}:{self.tag}"
        return f"{self.model}:{self.tag}"

    @property
    def full(self) -> str:
        """The fully qualified form, `host/namespace/model:tag`."""
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    def manifest_path(self, root: Path) -> Path:
        """`root/manifests/host/namespace/model/tag.yaml`, checked to stay under root."""
        base = (Path(root) / "manifests").resolve()
        path = base / self.host / self.namespace / self.model / f"{self.tag}.yaml"
        if not path.resolve().is_relative_to(base) or ".." in path.relative_to(base).parts:
            raise InvalidName(self.full, "it would point outside the model store")
        return path


def _split_tag(name: str) -> tuple[str, str]:
    """Split off `:tag` from the last '/'-separated part (a host may carry ':port')."""
    head, _, last = name.rpartition("/")
    if ":" not in last:
        return name, DEFAULT_TAG
    model, _, tag = last.rpartition(":")
    return (f"{head}/{model}" if head else model), tag


def _check_part(text: str, kind: str, value: str) -> None:
    """Check one part (lowercased: names are case-insensitive); errors quote it as given."""
    pattern, limit = _RULES[kind]
    if not value:
        raise InvalidName(text, f"the {kind} is empty")
    if ".." in value:
        raise InvalidName(text, f"'..' is not allowed in the {kind}")
    if len(value) > limit:
        raise InvalidName(text, f"the {kind} is longer than {limit} characters")
    if not pattern.fullmatch(value.lower()):
        raise InvalidName(text, f"the {kind} '{value}' may only contain {_CHARSET_HINT[kind]}")


def slug(text: str, limit: int = 64) -> str:
    """Turn free text (a file stem, a repo name) into a valid name part.

    The default limit keeps a name built from three slugs well under MAX_NAME_LENGTH.
    """
    value = re.sub(r"[^a-z0-9._-]+", "-", text.lower())
    value = re.sub(r"\.{2,}", ".", value).lstrip("._-")[:limit].rstrip("._-")
    return value or "model"
