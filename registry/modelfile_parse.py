"""Reading a Modelfile's text: YAML or Ollama's classic syntax, told apart by content.

A file whose first instruction (after blank lines and `#` comments) reads
`key:` (or starts a YAML document with `---`, `-` or `{`) is YAML; anything else is
the classic syntax. Errors name the file and the line: "Modelfile line 4:
unknown parameter 'temprature' (known: stop, temperature, ...)".
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from corral.registry.modelfile import (
    Modelfile,
    ModelfileError,
    check_fields,
    parameter_warnings,
    placed,
    resolve_from,
)
from corral.registry.modelfile_classic import parse_classic

_YAML_HEAD = re.compile(r"(---|-(\s|$)|\{|[A-Za-z_][\w-]*\s*:(\s|$))")
Where = tuple[str | int, ...]


def is_yaml(text: str) -> bool:
    """Whether a Modelfile is YAML: its first instruction reads `key:` (or `---`, `{`)."""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            return _YAML_HEAD.match(stripped) is not None
    return False


def parse_modelfile(
    text: str, *, base_dir: Path | None = None, origin: str = "Modelfile"
) -> Modelfile:
    """Parse either syntax; relative paths in FROM are taken from `base_dir`."""
    text = text.removeprefix("\ufeff")
    if is_yaml(text):
        return parse_yaml(text, base_dir=base_dir, origin=origin)
    return parse_classic(text, base_dir=base_dir, origin=origin)


def parse_yaml(text: str, *, base_dir: Path | None = None, origin: str = "Modelfile") -> Modelfile:
    root, data = _load(text, origin)
    if not isinstance(data, dict):
        raise ModelfileError("expected a YAML mapping of fields (from:, parameters:, ...)").at(
            origin, 1
        )
    lines = _lines(root)
    try:
        checked = check_fields({k: v for k, v in data.items() if v is not None})  # null: keep
        if "from_" not in checked:
            raise ModelfileError("missing 'from': say which model to start from, e.g. from: NAME")
        checked["from_"] = resolve_from(checked["from_"], base_dir)
    except ModelfileError as e:
        line = next((lines[e.where[:n]] for n in (2, 1) if e.where[:n] in lines), None)
        raise e.at(origin, line) from None
    skipped = parameter_warnings(data.get("parameters")).items()
    warnings = tuple(placed(w, origin, lines.get(("parameters", k))) for k, w in skipped)
    return Modelfile(**checked, warnings=warnings)


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader without aliases: `*name` repeats a value without its size, so a megabyte
    of request could otherwise become gigabytes of manifest (a YAML "billion laughs")."""

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in a Modelfile", event.start_mark
            )
        return super().compose_node(parent, index)


def _load(text: str, origin: str) -> tuple[yaml.Node | None, object]:
    """The node tree (for line numbers) and the plain value of a YAML document."""
    try:
        return yaml.compose(text, Loader=_NoAliasLoader), yaml.load(text, Loader=_NoAliasLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        problem = " ".join(str(e.problem or e.context or "not valid").split())
        line = mark.line + 1 if mark else None
        raise ModelfileError(f"invalid YAML: {problem}").at(origin, line) from None
    except yaml.YAMLError as e:
        raise ModelfileError(f"invalid YAML: {' '.join(str(e).split())}").at(origin, None) from None


def _lines(root: yaml.Node | None) -> dict[Where, int]:
    """The 1-based line of each top-level key, each parameter and each message."""
    lines: dict[Where, int] = {}
    if not isinstance(root, yaml.MappingNode):
        return lines
    for key, value in root.value:
        name = str(key.value)
        lines[(name,)] = key.start_mark.line + 1
        if isinstance(value, yaml.MappingNode):
            for sub, _ in value.value:
                lines[(name, str(sub.value))] = sub.start_mark.line + 1
        elif isinstance(value, yaml.SequenceNode):
            for i, item in enumerate(value.value):
                lines[(name, i)] = item.start_mark.line + 1
    return lines
