"""The JSON codec of the wire types: checked decoding by type hints, encoding without nulls.

`Wire.from_json` checks every field's JSON type against the dataclass's type
hints and raises `WireError` naming the field (the daemon answers 400).
Unknown fields are ignored, as Ollama does; `null` means "absent", as in Go.
A field declared with `nullable()` is sent as `null` when None (OpenAI's
bodies have such fields) instead of being left out.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self, TypeVar, dataclass_transform


class WireError(ValueError):
    """A JSON body does not match the API's types; the message names the field."""


_JSON_KIND: tuple[tuple[type, str], ...] = (
    (bool, "a boolean"),  # before int: bool is an int in Python
    (int, "a number"),
    (float, "a number"),
    (str, "a string"),
    (list, "an array"),
    (dict, "an object"),
)
_EXPECTED: dict[Any, str] = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    dict: "an object",
}
_PLURAL: dict[Any, str] = {str: "strings", int: "integers", float: "numbers", bool: "booleans"}


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return next((name for t, name in _JSON_KIND if isinstance(value, t)), type(value).__name__)


def _fail(path: str, expected: str, value: Any) -> WireError:
    return WireError(f"field '{path}' must be {expected}, got {_kind(value)}")


def _decode_scalar(hint: type, value: Any, path: str) -> Any:
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # JSON has one number type; 5.0 is an integer
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, hint)
    if not ok:
        raise _fail(path, _EXPECTED.get(hint, hint.__name__), value)
    return value


def _describe(hint: Any) -> str:
    """What JSON a type hint wants, for error messages: "an array of strings"."""
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        return f"an array of {_PLURAL[item]}" if item in _PLURAL else "an array"
    if isinstance(hint, type) and issubclass(hint, Wire):
        return "an object"
    return _EXPECTED.get(hint, getattr(hint, "__name__", str(hint)))


def _container_of(hint: Any, value: Any) -> bool:
    """Whether `value` is the JSON container `hint` wants (its contents may still be wrong)."""
    if isinstance(value, list):
        return typing.get_origin(hint) is tuple
    wants_object = typing.get_origin(hint) is dict or (
        isinstance(hint, type) and issubclass(hint, Wire)
    )
    return isinstance(value, dict) and wants_object


def _decode(hint: Any, value: Any, path: str) -> Any:
    """Check `value` (parsed JSON) against the type hint `hint` and convert it."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(options) == 1:  # X | None: None was handled by the caller
            return _decode(options[0], value, path)
        failures: list[tuple[Any, WireError]] = []
        for option in options:
            try:
                return _decode(option, value, path)
            except WireError as e:
                failures.append((option, e))
        for option, error in failures:  # the right kind, wrong inside: say where
            if _container_of(option, value):
                raise error
        raise _fail(path, " or ".join(_describe(o) for o in options), value)
    if origin is tuple:
        if not isinstance(value, list):
            raise _fail(path, "an array", value)
        (item,) = typing.get_args(hint)[:1]
        return tuple(_decode(item, v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise _fail(path, "an object", value)
        return dict(value)
    if isinstance(hint, type) and issubclass(hint, Wire):
        return hint.from_dict(value, path=path + ".")
    return _decode_scalar(hint, value, path)


def _encode(value: Any) -> Any:
    if isinstance(value, Wire):
        return value.to_dict()
    if isinstance(value, tuple | list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    return value


class Wire:
    """Base of the wire dataclasses: JSON encoding and checked decoding."""

    _ALIASES: ClassVar[Mapping[str, str]] = {}  # deprecated JSON name -> field name

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, leaving out fields that are None (unless `nullable()`)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if (value is not None or f.metadata.get("null")) and f.metadata.get("wire", True):
                out[f.name] = _encode(value)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> Self:
        """Parse a JSON document; malformed JSON or wrong field types raise WireError."""
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise WireError(f"invalid JSON in request body: {e}") from None
        except RecursionError:
            raise WireError("invalid JSON in request body: nested too deeply") from None
        try:
            return cls.from_dict(data)
        except RecursionError:
            raise WireError("the request body is nested too deeply") from None

    @classmethod
    def from_dict(cls, data: Any, path: str = "") -> Self:
        if not isinstance(data, dict):
            where = f"field '{path[:-1]}'" if path else "the request body"
            raise WireError(f"{where} must be a JSON object, got {_kind(data)}")
        hints = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if not f.metadata.get("wire", True):
                continue
            value = data.get(f.name)
            if value is None:
                alias = next((a for a, n in cls._ALIASES.items() if n == f.name), None)
                value = data.get(alias) if alias else None
            if value is None:  # null means absent, as in Go
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise WireError(f"field '{path}{f.name}' is required")
                continue
            kwargs[f.name] = _decode(hints[f.name], value, path + f.name)
        return cls(**kwargs)


T = TypeVar("T")


@dataclass_transform(frozen_default=True, kw_only_default=True, field_specifiers=(field,))
def wire(cls: type[T]) -> type[T]:
    """The decorator of every wire type: frozen, keyword-only fields. Declared a dataclass
    transform so that editors and type checkers know the constructors' arguments."""
    return dataclass(frozen=True, kw_only=True)(cls)


def nullable() -> Any:
    """A field that defaults to None and is sent as `null` rather than left out."""
    return dataclasses.field(default=None, metadata={"null": True})
