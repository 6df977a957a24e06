"""Running a parsed Go template on data made of dicts, lists, strings and numbers.

Go's rules where chat templates meet them: truth (false, 0, nil and empty strings,
lists and maps are false), `and`/`or` returning an operand and stopping early, `eq`
against several values, `len` of a string counting UTF-8 bytes, a map's missing key
printing `<no value>`, values printed as Go's fmt prints them. Ollama's template
functions (`json`, `currentDate`, `yesterdayDate`, `toTypeScriptType`) are here too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from corral.runtime.gotemplate.lex import GoTemplateError
from corral.runtime.gotemplate.parse import (
    Action,
    Arg,
    Branch,
    Chain,
    Command,
    Dot,
    Field,
    Function,
    Literal,
    LoopControl,
    Node,
    Pipe,
    Text,
    Variable,
)
from corral.runtime.gotemplate.values import FUNCTIONS, LAZY_FUNCTIONS, go_print, truth

# A template (from a Modelfile or a request) that loops on is stopped at either limit.
MAX_OUTPUT = 16 << 20  # characters, of the output and of any one value
MAX_STEPS = 1_000_000  # nodes run, plus a step per STEP_CHARACTERS a function reads or makes
STEP_CHARACTERS = 1024


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


def execute(nodes: Sequence[Node], data: Any) -> str:
    """The text of `nodes` run on `data` (`.` and `$` at the top)."""
    run = _Run(data)
    run.walk(data, nodes)
    return "".join(run.out)


class _Run:
    def __init__(self, data: Any) -> None:
        self.vars: list[tuple[str, Any]] = [("$", data)]
        self.out: list[str] = []
        self.size = 0
        self.steps = 0

    def write(self, text: str) -> None:
        self.size += len(text)
        if self.size > MAX_OUTPUT:
            raise GoTemplateError(f"template output exceeds {MAX_OUTPUT} characters")
        self.out.append(text)

    def spend(self, steps: int) -> None:
        self.steps += steps
        if self.steps > MAX_STEPS:
            raise GoTemplateError(f"template runs more than {MAX_STEPS} steps: does it loop?")

    def walk(self, dot: Any, nodes: Sequence[Node]) -> None:
        self.spend(len(nodes) + 1)
        for node in nodes:
            if isinstance(node, Text):
                self.write(node.text)
            elif isinstance(node, Action):
                value = self.pipe(dot, node.pipe)
                if not node.pipe.declare:
                    self.write(go_print(value))
            elif isinstance(node, Branch):
                self.branch(dot, node)
            elif isinstance(node, LoopControl):
                raise _Break() if node.kind == "break" else _Continue()

    def branch(self, dot: Any, node: Branch) -> None:
        mark = len(self.vars)
        try:
            if node.kind == "range":
                self.range(dot, node)
                return
            value = self.pipe(dot, node.pipe)
            if not truth(value):
                self.walk(dot, node.otherwise)
            else:
                self.walk(value if node.kind == "with" else dot, node.body)
        finally:
            del self.vars[mark:]

    def range(self, dot: Any, node: Branch) -> None:
        value = self.pipe(dot, Pipe(node.pipe.commands))
        empty = True
        for key, item in _items(value, node.line):
            empty = False
            mark = len(self.vars)
            names = node.pipe.declare
            if len(names) == 1:
                self.vars.append((names[0], item))
            elif len(names) == 2:
                self.vars += [(names[0], key), (names[1], item)]
            try:
                self.walk(item, node.body)
            except _Continue:
                pass
            except _Break:
                break
            finally:
                del self.vars[mark:]
        if empty:
            self.walk(dot, node.otherwise)

    # ----- pipelines -----------------------------------------------------------

    def pipe(self, dot: Any, pipe: Pipe) -> Any:
        value: Any = None
        for i, command in enumerate(pipe.commands):
            value = self.command(dot, command, (value,) if i else ())
        for name in pipe.declare:
            if pipe.assign:
                self.set_variable(name, value)
            else:
                self.vars.append((name, value))
        return value

    def command(self, dot: Any, command: Command, piped: tuple[Any, ...]) -> Any:
        first, args = command.args[0], command.args[1:]
        if isinstance(first, Function):
            return self.call(dot, first.name, args, piped)
        if args or piped:
            raise GoTemplateError(f"can't give argument to non-function {_describe(first)}")
        return self.arg(dot, first)

    def call(self, dot: Any, name: str, args: Sequence[Arg], piped: tuple[Any, ...]) -> Any:
        if name in LAZY_FUNCTIONS:  # and / or: stop at the first operand that decides
            thunks = [lambda a=a: self.arg(dot, a) for a in args]
            thunks += [lambda v=v: v for v in piped]
            return LAZY_FUNCTIONS[name](thunks)
        values = [self.arg(dot, a) for a in args] + list(piped)
        function: Callable[..., Any] = FUNCTIONS[name]
        self.spend(1 + _characters(values) // STEP_CHARACTERS)
        try:
            result = function(*values)
        except GoTemplateError:
            raise
        except (TypeError, ValueError, IndexError, KeyError) as e:
            raise GoTemplateError(f"error calling {name}: {e}") from None
        if (made := _characters((result,))) > MAX_OUTPUT:
            raise GoTemplateError(
                f"error calling {name}: its result exceeds {MAX_OUTPUT} characters"
            )
        self.spend(made // STEP_CHARACTERS)
        return result

    def arg(self, dot: Any, arg: Arg) -> Any:
        if isinstance(arg, Dot):
            return dot
        if isinstance(arg, Field):
            return _fields(dot, arg.names)
        if isinstance(arg, Variable):
            return _fields(self.variable(arg.name), arg.names)
        if isinstance(arg, Literal):
            return arg.value
        if isinstance(arg, Function):
            return self.call(dot, arg.name, (), ())
        if isinstance(arg, Chain):
            return _fields(self.pipe(dot, arg.node), arg.names)
        return self.pipe(dot, arg)

    def variable(self, name: str) -> Any:
        for known, value in reversed(self.vars):
            if known == name:
                return value
        raise GoTemplateError(f"undefined variable: {name}")

    def set_variable(self, name: str, value: Any) -> None:
        for i in range(len(self.vars) - 1, -1, -1):
            if self.vars[i][0] == name:
                self.vars[i] = (name, value)
                return
        raise GoTemplateError(f"undefined variable: {name}")


def _characters(values: Iterable[Any]) -> int:
    """The length of the strings among `values`: what a function reads or makes."""
    return sum(len(v) for v in values if isinstance(v, str))


def _fields(value: Any, names: Sequence[str]) -> Any:
    for name in names:
        if isinstance(value, Mapping):
            value = value.get(name)
        elif value is None:
            return None
        else:
            raise GoTemplateError(f"can't evaluate field {name} in type {type(value).__name__}")
    return value


def _items(value: Any, line: int) -> Iterable[tuple[Any, Any]]:
    """(key, element) pairs of what `range` runs over, made as it goes."""
    if value is None:
        return ()
    if isinstance(value, Mapping):
        return ((k, value[k]) for k in sorted(value))
    if isinstance(value, (list, tuple)):
        return enumerate(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return ((i, i) for i in range(value))
    raise GoTemplateError(f"template: line {line}: range can't iterate over {go_print(value)}")


def _describe(arg: Arg) -> str:
    if isinstance(arg, Field):
        return "." + ".".join(arg.names)
    if isinstance(arg, Variable):
        return ".".join((arg.name, *arg.names))
    return type(arg).__name__.lower()
