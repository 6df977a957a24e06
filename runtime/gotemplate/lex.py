"""Go text/template source split into text and the tokens of each action.

Follows Go's lexer where templates people write for Ollama reach: `{{- ` and ` -}}`
trim the whitespace next to an action, `{{/* comments */}}`, interpreted ("...") and
raw (`...`) strings, character constants, numbers, `.Field` chains, `$variables`,
`:=`, `=`, `|`, `,` and parentheses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LEFT, RIGHT = "{{", "}}"
TRIM_SPACE = " \t\r\n"


class GoTemplateError(ValueError):
    """A Go template does not parse or fails to execute; the message says where and why."""


@dataclass(frozen=True)
class Token:
    kind: str  # one of TOKEN_PATTERNS' names
    text: str
    spaced: bool  # whitespace came before it (`$x .Y` is two operands, `$x.Y` one)
    line: int


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class ActionSource:
    tokens: tuple[Token, ...]
    line: int


Segment = Text | ActionSource

# Token kinds, tried in order at each position inside an action.
TOKEN_PATTERNS: tuple[tuple[str, str], ...] = (
    ("declare", r":="),
    ("assign", r"="),
    ("pipe", r"\|"),
    ("comma", r","),
    ("lparen", r"\("),
    ("rparen", r"\)"),
    ("string", r'"(?:[^"\\\n]|\\.)*"'),
    ("raw", r"`[^`]*`"),
    ("char", r"'(?:[^'\\\n]|\\.)+'"),
    ("number", r"[+-]?(?:0[xX][0-9a-fA-F_]+|(?:\d[\d_]*)?\.?\d[\d_]*(?:[eE][+-]?\d+)?)"),
    ("field", r"\.[A-Za-z_][A-Za-z0-9_]*"),
    ("dot", r"\."),
    ("variable", r"\$[A-Za-z0-9_]*"),
    ("identifier", r"[A-Za-z_][A-Za-z0-9_]*"),
)
_TOKEN = re.compile("|".join(f"(?P<{name}>{pattern})" for name, pattern in TOKEN_PATTERNS))
_SPACE = re.compile(r"[ \t\r\n]+")
_COMMENT = re.compile(r"/\*.*?\*/", re.DOTALL)


def split(source: str) -> list[Segment]:
    """The template as text segments and actions, whitespace trimmed where asked."""
    segments: list[Segment] = []
    pos, trim_next, line = 0, False, 1
    while (start := source.find(LEFT, pos)) >= 0:
        text = source[pos:start]
        inner = start + len(LEFT)
        trim_before = source.startswith("-", inner) and source[inner + 1 : inner + 2] in (
            *TRIM_SPACE,
        )
        if trim_before:
            text, inner = text.rstrip(TRIM_SPACE), inner + 2
        if trim_next:
            text = text.lstrip(TRIM_SPACE)
        if text:
            segments.append(Text(text))
        line += source.count("\n", pos, start)  # counted once per character, not per action
        tokens, end, trim_next = _action(source, inner, line)
        line += source.count("\n", start, end)
        pos = end
        if tokens:
            segments.append(ActionSource(tokens, line))
    text = source[pos:]
    if trim_next:
        text = text.lstrip(TRIM_SPACE)
    if text:
        segments.append(Text(text))
    return segments


def _action(source: str, pos: int, line: int) -> tuple[tuple[Token, ...], int, bool]:
    """The tokens of the action starting at `pos` (after `{{` and any `- `), the position
    after its `}}`, and whether it trims the text that follows."""
    comment = _COMMENT.match(source, _skip_space(source, pos))
    if comment:
        end = _skip_space(source, comment.end())
        return (), *_close(source, end, line, "comment")
    tokens: list[Token] = []
    while True:
        after_space = _skip_space(source, pos)
        spaced = after_space > pos
        pos = after_space
        if source.startswith(RIGHT, pos) or (spaced and source.startswith("-" + RIGHT, pos)):
            return tuple(tokens), *_close(source, pos, line, "action")
        match = _TOKEN.match(source, pos)
        if match is None or match.end() == pos:
            if pos >= len(source):
                raise GoTemplateError(f"template: line {line}: unclosed action")
            raise GoTemplateError(f"template: line {line}: unexpected {source[pos]!r} in action")
        kind = match.lastgroup or ""
        tokens.append(Token(kind, match.group(), spaced or not tokens, line))
        line += match.group().count("\n")
        pos = match.end()


def _close(source: str, pos: int, line: int, what: str) -> tuple[int, bool]:
    if source.startswith("-" + RIGHT, pos):
        return pos + 1 + len(RIGHT), True
    if source.startswith(RIGHT, pos):
        return pos + len(RIGHT), False
    raise GoTemplateError(f"template: line {line}: unclosed {what}")


def _skip_space(source: str, pos: int) -> int:
    match = _SPACE.match(source, pos)
    return match.end() if match else pos
