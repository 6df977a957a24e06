"""Go's view of template values: truth, printing, and text/template's functions."""

from __future__ import annotations

import datetime
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from corral.runtime.gotemplate.lex import GoTemplateError

NO_VALUE = "<no value>"  # what Go prints for a missing map key or nil


def truth(value: Any) -> bool:
    """Go's template truth: false, 0, nil, and empty strings, lists and maps are false."""
    if value is None:
        return False
    if isinstance(value, (bool, int, float, str, Mapping, list, tuple)):
        return bool(value)
    return True


def go_print(value: Any) -> str:
    """`value` as Go's fmt prints it with %v."""
    if value is None:
        return NO_VALUE
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, Mapping):
        return "map[" + " ".join(f"{go_print(k)}:{go_print(value[k])}" for k in sorted(value)) + "]"
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(go_print(v) for v in value) + "]"
    return str(value)


def _go_float(value: float) -> str:
    """strconv.FormatFloat(value, 'g', -1, 64): the shortest digits, %e form for exponents
    below -4 or from 6 on (Go prints 1e6 as 1e+06)."""
    if math.isinf(value) or math.isnan(value):
        return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
    if value == 0:
        return "0"
    sign, digits, exp10 = Decimal(repr(value)).normalize().as_tuple()
    exponent = len(digits) + int(exp10) - 1
    if -4 <= exponent < 6:
        return format(Decimal(repr(value)).normalize(), "f")
    mantissa = str(digits[0]) + ("." + "".join(map(str, digits[1:])) if len(digits) > 1 else "")
    return f"{'-' if sign else ''}{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"


# ----- comparison ----------------------------------------------------------------------


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):  # Go compares no int with a float: 1 and 1.0 are an error
        return "float"
    if isinstance(value, str):
        return "string"
    return "nil" if value is None else type(value).__name__


BASIC_KINDS = ("bool", "int", "float", "string", "nil")


def _comparable(a: Any, b: Any) -> None:
    if None in (a, b):  # nil equals only nil, and compares with anything
        return
    if _kind(a) != _kind(b):
        raise GoTemplateError(f"incompatible types for comparison: {_kind(a)} and {_kind(b)}")
    if _kind(a) not in BASIC_KINDS:  # Go's slices and maps are not comparable
        raise GoTemplateError(f"non-comparable type: {_kind(a)}")


def eq(first: Any, *others: Any) -> bool:
    if not others:
        raise GoTemplateError("missing argument for comparison")
    for other in others:
        _comparable(first, other)
        if first == other:
            return True
    return False


def _ordered(test: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def compare(a: Any, b: Any) -> bool:
        _comparable(a, b)
        if _kind(a) not in ("int", "float", "string"):
            raise GoTemplateError(f"invalid type for comparison: {_kind(a)}")
        return test(a, b)

    return compare


def go_and(thunks: Sequence[Callable[[], Any]]) -> Any:
    value = None
    for thunk in thunks:
        value = thunk()
        if not truth(value):
            return value
    return value


def go_or(thunks: Sequence[Callable[[], Any]]) -> Any:
    value = None
    for thunk in thunks:
        value = thunk()
        if truth(value):
            return value
    return value


# ----- collections ---------------------------------------------------------------------


def go_len(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode())  # Go counts a string's bytes
    if isinstance(value, (Mapping, list, tuple)):
        return len(value)
    raise GoTemplateError(f"len of {_kind(value)}")


def index(value: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(value, Mapping):
            value = value.get(key)
        elif isinstance(value, (list, tuple, str)) and isinstance(key, int):
            items = value.encode() if isinstance(value, str) else value  # a string's bytes
            if not 0 <= key < len(items):
                raise GoTemplateError(f"index out of range: {key}")
            value = items[key]
        else:
            raise GoTemplateError(f"can't index item of type {_kind(value)}")
    return value


def go_slice(value: Any, *bounds: int) -> Any:
    if len(bounds) > 2:
        raise GoTemplateError("too many slice indexes")
    if isinstance(value, str):
        data = value.encode()
        return data[slice(*bounds) if bounds else slice(None)].decode(errors="replace")
    if not isinstance(value, (list, tuple)):
        raise GoTemplateError(f"can't slice item of type {_kind(value)}")
    start, end = (*bounds, len(value))[:2] if bounds else (0, len(value))
    if not 0 <= start <= end <= len(value):
        raise GoTemplateError(f"slice index out of range: [{start}:{end}]")
    return value[start:end]


# ----- printing ------------------------------------------------------------------------


def sprint(*values: Any) -> str:
    """fmt.Sprint: a space between operands when neither is a string."""
    out = ""
    for i, value in enumerate(values):
        if i and not isinstance(value, str) and not isinstance(values[i - 1], str):
            out += " "
        out += go_print(value)
    return out


def sprintln(*values: Any) -> str:
    return " ".join(go_print(v) for v in values) + "\n"


MAX_WIDTH = 1_000_000
_VERB = re.compile(r"%([-+# 0]*)(\d*)(?:\.(\d+))?([vsdqtfgxX%])")


def sprintf(template: str, *values: Any) -> str:
    """fmt.Sprintf for the verbs templates use: %v %s %d %q %t %f %g %x %X %%."""
    remaining = list(values)

    def verb(match: re.Match[str]) -> str:
        flags, width, precision, kind = match.groups()
        if kind == "%":
            return "%"
        bad = ""  # Go's fmt ignores a width or precision over 10^6, and says so
        if width and int(width) > MAX_WIDTH:
            bad, width = "%!(BADWIDTH)", ""
        if precision and int(precision) > MAX_WIDTH:
            bad, precision = bad + "%!(BADPREC)", None
        if not remaining:
            return f"%!{kind}(MISSING)"
        value = remaining.pop(0)
        if kind == "q":
            text = '"' + go_print(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
        elif kind in "fgxX" and isinstance(value, (int, float)) and not isinstance(value, bool):
            spec = f".{precision}{kind}" if precision else kind
            text = format(value, spec)
        else:
            text = go_print(value)
        padded = text.ljust(int(width)) if "-" in flags and width else text.rjust(int(width or 0))
        return bad + padded

    return _VERB.sub(verb, template)


# ----- Ollama's additions (its template/template.go) ---------------------------------


def go_json(value: Any) -> str:
    """Go's json.Marshal: compact, with <, > and & escaped as Go escapes them."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escaped)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def today(*_format: str) -> str:
    return datetime.date.today().isoformat()


def yesterday(*_format: str) -> str:
    return (datetime.date.today() - datetime.timedelta(days=1)).isoformat()


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "eq": eq,
    "ne": lambda a, b: not eq(a, b),
    "lt": _ordered(lambda a, b: a < b),
    "le": _ordered(lambda a, b: a <= b),
    "gt": _ordered(lambda a, b: a > b),
    "ge": _ordered(lambda a, b: a >= b),
    "not": lambda value: not truth(value),
    "len": go_len,
    "index": index,
    "slice": go_slice,
    "print": sprint,
    "println": sprintln,
    "printf": sprintf,
    "json": go_json,
    "currentDate": today,
    "yesterdayDate": yesterday,
    "toTypeScriptType": lambda _value: "any",  # tools are not supported yet
}
LAZY_FUNCTIONS: dict[str, Callable[[Sequence[Callable[[], Any]]], Any]] = {
    "and": go_and,
    "or": go_or,
}
FUNCTION_NAMES = frozenset(FUNCTIONS) | frozenset(LAZY_FUNCTIONS)
