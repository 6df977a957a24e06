"""The Modelfile of an installed model: corral's YAML, or Ollama's classic text.

Both start from the model itself (`from: NAME`), so creating from either gives
a model with the same file, parameters, template, system prompt, messages and
license; comments name the original source for building it from scratch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml

from corral.registry.manifest import Manifest
from corral.registry.store import InstalledModel


def to_yaml(model: InstalledModel) -> str:
    """corral's YAML Modelfile of `model` (`null` keeps what the base has)."""
    m = model.manifest
    data: dict[str, Any] = {
        "from": model.name,
        "parameters": dict(m.parameters),
        "template": m.template,
        "system": m.system,
        "messages": [dict(x) for x in m.messages],
        "license": m.license,
    }
    body = yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    title = f"Modelfile of {model.name}, as `corral show --modelfile` prints it."
    return "".join(f"# {line}\n" for line in _header(model, title)) + body


def to_classic(model: InstalledModel) -> str:
    """Ollama's classic Modelfile text of `model`, as /api/show's `modelfile` carries it."""
    m = model.manifest
    title = f"Modelfile of {model.name} (Ollama's syntax; `corral show --modelfile` prints YAML)."
    lines = [f"# {line}" for line in _header(model, title)]
    lines.append(f"FROM {model.name}")
    if m.template is not None:
        lines.append(f"TEMPLATE {_quote(m.template)}")
    if m.system is not None:
        lines.append(f"SYSTEM {_quote(m.system)}")
    lines += [f"PARAMETER {name} {_quote(str(v))}" for name, v in _parameter_items(m)]
    lines += [f"MESSAGE {x['role']} {_quote(x['content'])}" for x in m.messages]
    if m.license is not None:
        lines.append(f"LICENSE {_quote(m.license)}")
    return "\n".join(lines) + "\n"


def _header(model: InstalledModel, title: str) -> list[str]:
    m = model.manifest
    source = m.source.get("source") or m.source.get("created_from")
    lines = [
        title,
        "Build a model from it with `corral create NAME -f FILE`.",
        f"architecture: {m.architecture or 'unknown'}, parameters: {m.parameter_size}, "
        f"quantization: {m.quantization or 'unknown'}, file: {m.model}",
    ]
    if source:
        also = f", quantized to {m.quantization}" if m.source.get("quantized_from") else ""
        lines.append(f"To build it from its source instead of this model: FROM {source}{also}")
    return lines


def _parameter_items(m: Manifest) -> Iterator[tuple[str, Any]]:
    for name in sorted(m.parameters):
        value = m.parameters[name]
        for item in value if isinstance(value, list) else [value]:
            yield name, item


def _quote(text: str) -> str:
    """Bare when that reads back the same, else in \"\"\" quotes (as Ollama quotes)."""
    plain = text and text == text.strip() and not any(c in text for c in '\n"')
    return text if plain else f'"""{text}"""'


class _Dumper(yaml.SafeDumper):
    """SafeDumper writing multi-line strings (templates) as literal blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)
