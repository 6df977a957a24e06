"""Bounds on what one render of a Jinja chat template may cost.

Templates come from requests (`template`), Modelfiles and uploaded GGUF files, so
a hostile one must not hold a core forever (nested `range` loops, recursive macros)
or exhaust memory (`'x' * 10**10`, a string doubled in a loop, `center(10**10)`).
As for Go templates (gotemplate/execute.py), a render stops with an error after
MAX_STEPS steps (a loop turn, a call, a filter) or MAX_OUTPUT characters of output
(counted in captured blocks and macros too); operators, calls and filters that
would build a value larger than MAX_OUTPUT are refused before they run. Constant
expressions are not folded when compiling, which would run them unbounded.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from jinja2 import nodes, pass_context
from jinja2.runtime import Context, LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

MAX_STEPS = 1_000_000
MAX_OUTPUT = 16 << 20  # characters, of the output and of any one value
MAX_ARGUMENT = 1 << 20  # an int given to a call or filter (a width, a count)
MAX_INT_BITS = 1 << 16
STEP_FILTER = "_corral_step"
OUTPUT_FILTER = "_corral_output"
CONCAT_FILTER = "_corral_concat"
# str methods whose result can dwarf their arguments; no chat template needs them
UNSAFE_STR_METHODS = frozenset({"expandtabs", "translate", "maketrans"})
_FORMAT_SPEC = re.compile(r"%[^a-zA-Z%]*|\{[^{}]*\}")


class RenderLimit(ValueError):
    """A render went past one of the limits; the message says which."""


@dataclass
class _Budget:
    steps: int = 0
    output: int = 0


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar(
    "corral_jinja_budget", default=None
)


@contextlib.contextmanager
def budget() -> Iterator[None]:
    """A fresh budget for the renders inside the block."""
    token = _BUDGET.set(_Budget())
    try:
        yield
    finally:
        _BUDGET.reset(token)


def spend(steps: int = 1, output: int = 0) -> None:
    current = _BUDGET.get()
    if current is None:
        return
    current.steps += steps
    current.output += output
    if current.steps > MAX_STEPS:
        raise RenderLimit(f"chat template runs more than {MAX_STEPS} steps: does it loop?")
    if current.output > MAX_OUTPUT:
        raise RenderLimit(f"chat template output exceeds {MAX_OUTPUT} characters")


def check_size(size: int, what: str) -> None:
    if size > MAX_OUTPUT:
        raise RenderLimit(f"chat template {what} would exceed {MAX_OUTPUT} characters")


def _size(value: Any) -> int:
    return len(value) if isinstance(value, str | bytes | list | tuple | dict) else 0


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_arguments(args: Iterable[Any], what: str) -> None:
    """Refuse ints too large to be a width or count, and format strings with such widths."""
    for value in args:
        if _is_int(value) and abs(value) > MAX_ARGUMENT:
            raise RenderLimit(f"chat template {what}: argument {value} exceeds {MAX_ARGUMENT}")
        if isinstance(value, tuple | list):
            check_arguments((v for v in value if _is_int(v)), what)
        elif isinstance(value, dict):
            check_arguments((v for v in value.values() if _is_int(v)), what)


def check_format(text: Any) -> None:
    """Refuse a format string whose widths or precisions exceed MAX_ARGUMENT."""
    if not isinstance(text, str):
        return
    for spec in _FORMAT_SPEC.findall(text):
        if any(int(d) > MAX_ARGUMENT for d in re.findall(r"\d+", spec)):
            raise RenderLimit(f"chat template format '{spec[:40]}' asks for a width too large")


def check_binop(operator: str, left: Any, right: Any) -> None:
    if operator == "*":
        if _is_int(left) and _is_int(right):
            if left.bit_length() + right.bit_length() > MAX_INT_BITS:
                raise RenderLimit("chat template multiplies numbers too large")
        elif _is_int(right) or _is_int(left):
            count, value = (right, left) if _is_int(right) else (left, right)
            check_size(max(count, 0) * _size(value), "repetition")
    elif operator == "**" and _is_int(left) and _is_int(right):
        if abs(left) > 1 and right * left.bit_length() > MAX_INT_BITS:
            raise RenderLimit("chat template raises a number to too large a power")
    elif operator == "+":
        check_size(_size(left) + _size(right), "concatenation")
    elif operator == "%" and isinstance(left, str):
        check_format(left)
        check_arguments((right,), "formatting")


def _estimate_call(obj: Any, args: tuple[Any, ...]) -> None:
    """Pre-check the str methods whose result outgrows their arguments."""
    owner = getattr(getattr(obj, "__wrapped__", obj), "__self__", None)
    name = getattr(obj, "__name__", "")
    if not isinstance(owner, str):
        return
    if name in ("format", "format_map"):
        check_format(owner)
    elif name == "replace" and len(args) >= 2 and isinstance(args[1], str):
        old = args[0] if isinstance(args[0], str) else ""
        count = owner.count(old) if old else len(owner) + 1
        check_size(len(owner) + count * len(args[1]), "replace")
    elif name == "join" and args and isinstance(args[0], list | tuple):
        items = sum(_size(v) for v in args[0])
        check_size(items + len(owner) * max(len(args[0]) - 1, 0), "join")


def _counted(iterable: Any) -> Iterator[Any]:
    for item in iterable:
        spend()
        yield item


def _step(iterable: Any) -> Any:
    return _counted(iterable)


@pass_context
def _output(context: Context, value: Any) -> Any:
    spend(output=len(str(value)))
    return value


def _concat(values: list[Any]) -> str:
    parts = [str(v) for v in values]
    check_size(sum(map(len, parts)), "concatenation")
    return "".join(parts)


def _bounded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        spend()
        check_arguments((*args, *kwargs.values()), f"filter '{name}'")
        if name == "format" and args:
            check_format(args[0])
        if name == "join" and args:
            args = _joined_args(args, kwargs)
        if name == "indent":
            _check_indent(args, kwargs)
        result = function(*args, **kwargs)
        check_size(_size(result), f"filter '{name}'")
        return result

    return bounded


def _joined_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """The join filter's (eval_ctx, value, d, ...): its value made a list and sized first."""
    ctx, value, *rest = args
    items = list(value)
    sep = rest[0] if rest else kwargs.get("d", "")
    width = sum(_size(str(v)) for v in items) + _size(str(sep)) * max(len(items) - 1, 0)
    check_size(width, "join")
    return (ctx, items, *rest)


def _check_indent(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    text = args[0] if args else ""
    width = args[1] if len(args) > 1 else kwargs.get("width", 4)
    lines = str(text).count("\n") + 1
    check_size(len(str(text)) + lines * (len(width) if isinstance(width, str) else width), "indent")


class _Guards(NodeTransformer):
    """Count every loop turn and every piece of output; size every `~` concatenation."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, STEP_FILTER, [], [], None, None, lineno=node.lineno)
        return node

    def visit_Output(self, node: nodes.Output) -> nodes.Node:
        self.generic_visit(node)
        node.nodes = [
            nodes.Filter(child, OUTPUT_FILTER, [], [], None, None, lineno=child.lineno)
            for child in node.nodes
        ]
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        items = nodes.List(node.nodes, lineno=node.lineno)
        return nodes.Filter(items, CONCAT_FILTER, [], [], None, None, lineno=node.lineno)


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox with the limits above."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any) -> None:
        # no constant folding: it would run filters and operators unbounded, at compile time
        super().__init__(**{"optimized": False, **options})
        self.globals.pop("lipsum", None)  # n paragraphs of filler: a cheap way to fill memory

    def bound_filters(self) -> None:
        """Wrap every filter (call after adding the template's own)."""
        for name, function in list(self.filters.items()):
            self.filters[name] = _bounded_filter(name, function)
        self.filters[STEP_FILTER] = _step
        self.filters[OUTPUT_FILTER] = _output
        self.filters[CONCAT_FILTER] = _concat

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        return _Guards().visit(super()._parse(source, name, filename))

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if isinstance(obj, str) and attr in UNSAFE_STR_METHODS:
            return False
        return super().is_safe_attribute(obj, attr, value)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        spend()
        check_arguments((*args, *kwargs.values()), "call")
        _estimate_call(__obj, args)
        if isinstance(__obj, LoopContext) and args:  # a recursive loop's next level
            args = (_counted(args[0]), *args[1:])
        result = super().call(__context, __obj, *args, **kwargs)
        check_size(_size(result), "call")
        return result
