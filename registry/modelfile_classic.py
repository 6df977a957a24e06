"""Ollama's classic Modelfile syntax, as Ollama's own parser reads it.

    # a comment
    FROM smollm2:135m
    PARAMETER temperature 0.2
    PARAMETER stop <|im_end|>
    TEMPLATE \"\"\"{% for m in messages %}...{% endfor %}\"\"\"
    SYSTEM "You are terse."
    MESSAGE user Hi
    MESSAGE assistant \"\"\"Hello.\"\"\"
    LICENSE apache-2.0

Instructions are case-insensitive. A value is the rest of the line, or a
`"..."` or `\"\"\"...\"\"\"` quoted text that may span lines (it ends at a line whose
end closes the quote; the text between the quotes is kept as is). PARAMETER
stop and LICENSE may repeat (they accumulate); SYSTEM and TEMPLATE may repeat
(the last wins). REQUIRES (the version of Ollama a model needs) is skipped with a
warning; ADAPTER and Ollama's newer instructions are refused with the reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral.registry.errors import shown
from corral.registry.modelfile import (
    REFUSED,
    Modelfile,
    ModelfileError,
    check_from,
    check_license,
    check_message,
    check_template,
    coerce_parameter,
    ignored_parameter,
    placed,
    resolve_from,
)

INSTRUCTIONS = ("FROM", "PARAMETER", "TEMPLATE", "SYSTEM", "MESSAGE", "LICENSE")
EXPECTED = "an instruction (" + ", ".join(INSTRUCTIONS) + ") or a # comment"
QUOTES = ('"""', '"')
_HEAD = re.compile(r"(\S+)(?:[ \t]+(.*))?")
_PAIR = re.compile(r"(\S+)(?:[ \t]+(.*))?", re.DOTALL)
_VERSION = re.compile(r"v?\d+(\.\d+){0,2}(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?")  # Go's semver


@dataclass
class _Draft:
    """What the instructions read so far say."""

    base_dir: Path | None
    origin: str
    line: int = 0  # of the instruction being read
    values: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, str]] = field(default_factory=list)
    licenses: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def warn(self, message: str) -> None:
        self.warnings.append(placed(message, self.origin, self.line))

    def modelfile(self) -> Modelfile:
        values: dict[str, Any] = {**self.values, "warnings": tuple(self.warnings)}
        if self.messages:
            values["messages"] = tuple(self.messages)
        if self.licenses:
            values["license"] = check_license(self.licenses)
        return Modelfile(**values, parameters=self.parameters)


def parse_classic(
    text: str, *, base_dir: Path | None = None, origin: str = "Modelfile"
) -> Modelfile:
    draft = _Draft(base_dir, origin)
    for number, word, value in _instructions(text, origin):
        draft.line = number
        handler = HANDLERS.get(word.lower())
        try:
            if word.lower() in REFUSED:
                raise ModelfileError(f"{word.upper()}: {REFUSED[word.lower()]}")
            if handler is None:
                raise ModelfileError(f"expected {EXPECTED}, got '{word[:40]}'")
            if value is None:
                raise ModelfileError(f"{word.upper()} needs a value")
            handler(draft, value)
        except ModelfileError as e:
            raise e.at(origin, number) from None
    if "from_" not in draft.values:
        raise ModelfileError(
            "no FROM line: say which model to start from, e.g. FROM smollm2:135m"
        ).at(origin, None)
    return draft.modelfile()


def _instructions(text: str, origin: str) -> list[tuple[int, str, str | None]]:
    """(line number, instruction word, value text or None) of each instruction, quotes
    resolved. The value of PARAMETER and MESSAGE is "name rest"; their quoting starts at rest."""
    lines = text.splitlines()
    out: list[tuple[int, str, str | None]] = []
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if not stripped or stripped.startswith("#"):
            i += 1
            continue
        m = _HEAD.fullmatch(lines[i].lstrip())  # a quoted value may end its line in spaces
        assert m is not None  # a non-blank line always has a first word
        word, rest = m[1], m[2] or ""
        if word.lower() in ("parameter", "message"):
            key = _PAIR.fullmatch(rest)
            if key is None or not (key[2] or "").strip():
                what = "a name and a value" if word.lower() == "parameter" else "a role and text"
                raise ModelfileError(f"{word.upper()} needs {what}").at(origin, i + 1)
            value, last = _value(key[2], lines, i, origin)
            out.append((i + 1, word, f"{key[1]} {value}"))
        elif rest.strip():
            value, last = _value(rest, lines, i, origin)
            out.append((i + 1, word, value))
        else:
            last = i
            out.append((i + 1, word, None))
        i = last + 1
    return out


def _value(first: str, lines: list[str], i: int, origin: str) -> tuple[str, int]:
    """The value starting with `first` on line i (bare or quoted, over several lines when
    quoted), and the index of the line it ends on."""
    text = first.strip()
    quote = next((q for q in QUOTES if text.startswith(q)), None)
    if quote is None:
        return text, i
    j = i
    closed = text.endswith(quote) and len(text) >= 2 * len(quote)
    if not closed:  # its first line is kept whole too, spaces at its end included
        text = first.lstrip()
    while not closed:  # the lines in between are kept as they are, blank ones included
        j += 1
        if j >= len(lines):
            raise ModelfileError(
                f"the {quote} opened here is never closed (expected {quote} at the end of a line)"
            ).at(origin, i + 1)
        line = lines[j].rstrip() if lines[j].rstrip().endswith(quote) else lines[j]
        text = f"{text}\n{line}"
        closed = line.endswith(quote)
    return text[len(quote) : -len(quote)], j


# ----- one handler per instruction -------------------------------------------------------


def _from(draft: _Draft, value: str) -> None:
    if "from_" in draft.values:
        raise ModelfileError("a second FROM: a Modelfile starts from one model")
    draft.values["from_"] = resolve_from(check_from(value), draft.base_dir)


def _parameter(draft: _Draft, value: str) -> None:
    name, _, text = value.partition(" ")
    if (warning := ignored_parameter(name)) is not None:
        draft.warn(warning)
        return
    coerced = coerce_parameter(name, text)
    if name == "stop":
        draft.parameters["stop"] = [*draft.parameters.get("stop", []), *coerced]
    else:
        draft.parameters[name] = coerced


def _message(draft: _Draft, value: str) -> None:
    role, _, content = value.partition(" ")
    draft.messages.append(check_message({"role": role, "content": content}))


def _requires(draft: _Draft, value: str) -> None:
    """The version of Ollama a model needs: checked as Ollama does, then skipped."""
    if _VERSION.fullmatch(value) is None:
        raise ModelfileError(f"REQUIRES needs a version such as 0.14.0, got {shown(value)}")
    draft.warn(f"ignoring REQUIRES {value}: it is the version of Ollama the model needs")


def _set(key: str, check: Callable[[str], str] = str) -> Callable[[_Draft, str], None]:
    def handle(draft: _Draft, value: str) -> None:
        draft.values[key] = check(value)

    return handle


HANDLERS: dict[str, Callable[[_Draft, str], None]] = {
    "from": _from,
    "parameter": _parameter,
    "template": _set("template", check_template),
    "system": _set("system"),
    "message": _message,
    "license": lambda draft, value: draft.licenses.append(value),
    "requires": _requires,
}
