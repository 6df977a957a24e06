"""Go text/template parse trees: the nodes and the parser that builds them.

    tree = parse('{{- range .Messages }}{{ .Role }}: {{ .Content }}\n{{ end }}')

Control structures: if / else if / else, range (with `$i, $x :=`, else, break,
continue), with / else, variables (`:=`, `=`), pipelines with `|`, parenthesized
pipelines and field chains on them. `define`, `template` and `block` are refused:
chat templates do not need them. Function names are checked against `functions`
when parsing, as Go does.
"""

from __future__ import annotations

import ast
from collections.abc import Collection, Iterator
from dataclasses import dataclass

from corral.runtime.gotemplate.lex import ActionSource, GoTemplateError, Text, Token, split
from corral.runtime.gotemplate.values import FUNCTION_NAMES

# ----- nodes -------------------------------------------------------------------------


@dataclass(frozen=True)
class Dot:
    pass


@dataclass(frozen=True)
class Field:
    names: tuple[str, ...]  # .A.B: ("A", "B"), looked up on dot


@dataclass(frozen=True)
class Variable:
    name: str  # "$" is the data the template runs on
    names: tuple[str, ...] = ()  # $x.A.B


@dataclass(frozen=True)
class Literal:
    value: object  # str, int, float, bool or None


@dataclass(frozen=True)
class Function:
    name: str


@dataclass(frozen=True)
class Chain:
    node: Pipe  # (pipeline).A.B
    names: tuple[str, ...]


@dataclass(frozen=True)
class Command:
    args: tuple[Arg, ...]


@dataclass(frozen=True)
class Pipe:
    commands: tuple[Command, ...]
    declare: tuple[str, ...] = ()  # variables set from the result
    assign: bool = False  # `=` (set existing variables), not `:=`


Arg = Dot | Field | Variable | Literal | Function | Chain | Pipe


@dataclass(frozen=True)
class Action:
    pipe: Pipe
    line: int


@dataclass(frozen=True)
class Branch:
    kind: str  # "if" | "range" | "with"
    pipe: Pipe
    body: tuple[Node, ...]
    otherwise: tuple[Node, ...]
    line: int


@dataclass(frozen=True)
class LoopControl:
    kind: str  # "break" | "continue"


Node = Text | Action | Branch | LoopControl

KEYWORD_LITERALS = {"true": True, "false": False, "nil": None}
BRANCHES = ("if", "range", "with")
REFUSED = ("define", "template", "block")
# Control structures and parentheses nest at most this deep: parsing and running recurse
# once per level, and a request's template must not exhaust Python's stack.
MAX_DEPTH = 64


def parse(source: str, functions: Collection[str] = FUNCTION_NAMES) -> tuple[Node, ...]:
    """The template's nodes; GoTemplateError names the line and what is wrong."""
    parser = _Parser(iter(split(source)), functions)
    nodes, end = parser.list_until(())
    if end is not None:
        raise GoTemplateError(f"template: line {end.line}: unexpected {{{{{end.word}}}}}")
    return nodes


@dataclass(frozen=True)
class _End:
    """The action that closed a list: `end`, `else` (with what follows it), ..."""

    word: str
    rest: tuple[Token, ...]
    line: int


class _Parser:
    def __init__(self, segments: Iterator[Text | ActionSource], functions: Collection[str]):
        self.segments = segments
        self.functions = functions
        self.loops = 0  # ranges the parser is inside (break and continue need one)
        self.depth = 0  # control structures and parentheses the parser is inside

    def nest(self, line: int) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise GoTemplateError(f"template: line {line}: nested more than {MAX_DEPTH} deep")

    def list_until(self, words: tuple[str, ...]) -> tuple[tuple[Node, ...], _End | None]:
        """Nodes up to an action starting with one of `words` (None at the end of input)."""
        nodes: list[Node] = []
        for segment in self.segments:
            if isinstance(segment, Text):
                nodes.append(segment)
                continue
            first, line = segment.tokens[0], segment.line
            word = first.text if first.kind == "identifier" else ""
            if word in words:
                return tuple(nodes), _End(word, segment.tokens[1:], line)
            nodes.append(self.action(word, segment.tokens, line))
        if words:
            raise GoTemplateError("template: unexpected end of input: missing {{end}}")
        return tuple(nodes), None

    def action(self, word: str, tokens: tuple[Token, ...], line: int) -> Node:
        if word in BRANCHES:
            return self.branch(word, tokens[1:], line)
        if word in ("break", "continue"):
            if self.loops == 0 or len(tokens) > 1:
                raise GoTemplateError(
                    f"template: line {line}: {{{{{word}}}}} outside {{{{range}}}}"
                )
            return LoopControl(word)
        if word in ("end", "else"):
            raise GoTemplateError(f"template: line {line}: unexpected {{{{{word}}}}}")
        if word in REFUSED:
            raise GoTemplateError(
                f"template: line {line}: {{{{{word}}}}} is not supported in chat templates"
            )
        return Action(self.pipe(tokens, line, declarations=1), line)

    def branch(self, kind: str, tokens: tuple[Token, ...], line: int) -> Branch:
        self.nest(line)
        pipe = self.pipe(tokens, line, declarations=2 if kind == "range" else 1)
        self.loops += kind == "range"
        body, end = self.list_until(("end", "else"))
        self.loops -= kind == "range"
        otherwise: tuple[Node, ...] = ()
        assert end is not None
        if end.word == "else":
            if end.rest and end.rest[0].text in ("if", "with"):  # else if ...: a nested branch
                otherwise = (self.branch(end.rest[0].text, end.rest[1:], end.line),)
            elif end.rest:
                raise GoTemplateError(f"template: line {end.line}: unexpected tokens after else")
            else:
                otherwise, end = self.list_until(("end",))
                assert end is not None
                if end.rest:
                    raise GoTemplateError(f"template: line {end.line}: unexpected tokens after end")
        elif end.rest:
            raise GoTemplateError(f"template: line {end.line}: unexpected tokens after end")
        self.depth -= 1
        return Branch(kind, pipe, body, otherwise, line)

    # ----- pipelines ---------------------------------------------------------------

    def pipe(self, tokens: tuple[Token, ...], line: int, declarations: int) -> Pipe:
        if not tokens:
            raise GoTemplateError(f"template: line {line}: missing value for command")
        declare, assign, tokens = _declarations(tokens, line, declarations)
        commands, rest = self.commands(tokens, line)
        if rest:
            raise GoTemplateError(f"template: line {line}: unexpected {rest[0].text!r}")
        return Pipe(commands, declare, assign)

    def commands(
        self, tokens: tuple[Token, ...], line: int
    ) -> tuple[tuple[Command, ...], tuple[Token, ...]]:
        """Commands separated by `|`, up to an unmatched `)` (left in the rest)."""
        commands: list[Command] = []
        args: list[Arg] = []
        while tokens and tokens[0].kind != "rparen":
            token, tokens = tokens[0], tokens[1:]
            if token.kind == "pipe":
                if not args:
                    raise GoTemplateError(f"template: line {line}: missing command before |")
                commands.append(Command(tuple(args)))
                args = []
                continue
            arg, tokens = self.operand(token, tokens, line)
            args.append(arg)
        if not args:
            raise GoTemplateError(f"template: line {line}: missing value for command")
        commands.append(Command(tuple(args)))
        return tuple(commands), tokens

    def operand(
        self, token: Token, rest: tuple[Token, ...], line: int
    ) -> tuple[Arg, tuple[Token, ...]]:
        """One argument, with the fields written right after it (`$x.A`, `(...).B`)."""
        arg = self.term(token, rest, line)
        if isinstance(arg, tuple):
            arg, rest = arg
        names: list[str] = []
        while rest and rest[0].kind == "field" and not rest[0].spaced:
            names.append(rest[0].text[1:])
            rest = rest[1:]
        if not names:
            return arg, rest
        if isinstance(arg, Field):
            return Field(arg.names + tuple(names)), rest
        if isinstance(arg, Variable):
            return Variable(arg.name, arg.names + tuple(names)), rest
        if isinstance(arg, Pipe):
            return Chain(arg, tuple(names)), rest
        raise GoTemplateError(f"template: line {line}: unexpected field after {token.text}")

    def term(
        self, token: Token, rest: tuple[Token, ...], line: int
    ) -> Arg | tuple[Arg, tuple[Token, ...]]:
        kind, text = token.kind, token.text
        if kind == "lparen":
            self.nest(line)
            commands, rest = self.commands(rest, line)
            if not rest:
                raise GoTemplateError(f"template: line {line}: unclosed left paren")
            self.depth -= 1
            return Pipe(commands), rest[1:]
        if kind == "field":
            return Field((text[1:],))
        if kind == "dot":
            return Dot()
        if kind == "variable":
            return Variable(text)
        if kind in ("string", "raw", "char", "number"):
            return Literal(_literal(kind, text, line))
        if kind == "identifier":
            if text in KEYWORD_LITERALS:
                return Literal(KEYWORD_LITERALS[text])
            if text not in self.functions:
                raise GoTemplateError(f'template: line {line}: function "{text}" not defined')
            return Function(text)
        raise GoTemplateError(f"template: line {line}: unexpected {text!r} in operand")


def _declarations(
    tokens: tuple[Token, ...], line: int, allowed: int
) -> tuple[tuple[str, ...], bool, tuple[Token, ...]]:
    """`$x :=`, `$x =` or (range) `$i, $x :=` at the start of a pipeline."""
    names: list[str] = []
    rest = tokens
    while len(rest) >= 2 and rest[0].kind == "variable" and rest[1].kind in ("comma",):
        names.append(rest[0].text)
        rest = rest[2:]
    if len(rest) >= 2 and rest[0].kind == "variable" and rest[1].kind in ("declare", "assign"):
        names.append(rest[0].text)
        if len(names) > allowed:
            raise GoTemplateError(f"template: line {line}: too many declarations")
        return tuple(names), rest[1].kind == "assign", rest[2:]
    if names:
        raise GoTemplateError(f"template: line {line}: expected := after {names[-1]}")
    return (), False, tokens


def _literal(kind: str, text: str, line: int) -> object:
    try:
        if kind == "raw":
            return text[1:-1]
        if kind == "string":
            return ast.literal_eval(text)  # Go's escapes are Python's, bar a few rare ones
        if kind == "char":
            return ord(ast.literal_eval(text))
        clean = text.replace("_", "")
        if clean.lower().lstrip("+-").startswith("0x"):
            return _int64(int(clean, 16))
        return float(clean) if any(c in clean for c in ".eE") else _int64(int(clean))
    except (ValueError, SyntaxError, TypeError):
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise GoTemplateError(f"template: line {line}: bad {kind} constant {shown}") from None


def _int64(value: int) -> int:
    """Go's int: a larger constant overflows (and Python could not print it)."""
    if not -(1 << 63) <= value < 1 << 63:
        raise ValueError("overflows int")
    return value
