"""Modelfiles: what `corral create` builds a model from, and the checks of every field.

Two syntaxes say the same things (modelfile_parse.py tells them apart):

    from: smollm2:135m        # YAML: an installed or catalogued name, a GGUF path, a source
    quantize: Q4_K_M          # optional; needs an F32, F16 or BF16 model
    parameters: {temperature: 0.2, stop: ["<|im_end|>"]}
    template: "{% for m in messages %}..."     # a Jinja chat template
    system: You are a terse assistant.
    messages: [{role: user, content: hi}, {role: assistant, content: hello}]
    license: apache-2.0

and Ollama's classic FROM / PARAMETER / TEMPLATE / SYSTEM / MESSAGE / LICENSE
(modelfile_classic.py). A value left out keeps the base model's (parameters
merge over the base's, key by key); an empty `system`, `template` or
`messages` clears it. Every problem is a ModelfileError: one line saying what
was expected, with the file and line where the parsers know them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from corral.registry.catalog import PARAMETER_TYPES
from corral.registry.convert.pipeline import check_quantization
from corral.registry.errors import CorralError, SourceError, shown
from corral.registry.sources.hf import is_hf_name
from corral.registry.sources.local import looks_like_path
from corral.registry.sources.ms import is_ms_name
from corral.runtime.ollama_template import template_error

ROLES = ("system", "user", "assistant")
LICENSE_SEPARATOR = "\n\n"
# parameter -> smallest value that makes sense
LOWER_BOUNDS: dict[str, float] = {
    "temperature": 0, "top_k": 0, "top_p": 0, "min_p": 0, "repeat_penalty": 0,
    "repeat_last_n": -1, "num_ctx": 1, "num_predict": -2,
}  # fmt: skip
UPPER_BOUNDS: dict[str, float] = {"top_p": 1, "min_p": 1}
# fields a Modelfile may name but corral refuses, and why
REFUSED: dict[str, str] = {
    "adapter": "adapters (LoRA) are not supported: merge the adapter into the weights and "
    "create from the merged model",
    "draft": "draft models (speculative decoding) are not supported",
    "renderer": "custom renderers are not supported: give a Jinja 'template' instead",
    "parser": "custom output parsers are not supported",
}


class ModelfileError(CorralError):
    """A Modelfile (or /api/create request) that cannot be used; `where` is the field path."""

    def __init__(self, message: str, where: tuple[str | int, ...] = ()) -> None:
        super().__init__(message)
        self.where = where

    def at(self, origin: str, line: int | None) -> ModelfileError:
        """This error, prefixed with the file and line it comes from."""
        return ModelfileError(placed(str(self), origin, line), self.where)


def placed(message: str, origin: str, line: int | None) -> str:
    """`message` prefixed with the file and line it is about."""
    place = f"{origin} line {line}" if line else origin
    return f"{place}: {message}"


@dataclass(frozen=True)
class Modelfile:
    """A parsed Modelfile: the base to start from and what to change about it."""

    from_: str | None = None  # a model name, a path or a source
    files: tuple[tuple[str, str], ...] = ()  # (file name, blob digest): uploaded GGUF
    quantize: str | None = None  # canonical type name (Q4_K_M, Q8_0, ...)
    parameters: dict[str, Any] = field(default_factory=dict)  # merged over the base's
    template: str | None = None  # None keeps the base's; "" clears it
    system: str | None = None
    messages: tuple[dict[str, str], ...] | None = None  # None keeps the base's
    license: str | None = None
    warnings: tuple[str, ...] = ()  # what was skipped, one line each, told to the user

    def overridden(self, fields: Mapping[str, Any], base_dir: Path | None = None) -> Modelfile:
        """This Modelfile with `fields` (raw values by YAML key, e.g. from a request) checked
        and set over it; parameters merge key by key, a relative `from` is taken from
        `base_dir`."""
        checked = check_fields({k: v for k, v in fields.items() if v is not None})
        if "from_" in checked:
            checked["from_"] = resolve_from(checked["from_"], base_dir)
        parameters = {**self.parameters, **checked.pop("parameters", {})}
        skipped = parameter_warnings(fields.get("parameters")).values()
        warnings = (*self.warnings, *skipped)
        return replace(self, **checked, parameters=parameters, warnings=warnings)


# ----- checks of single fields (raise ModelfileError with `where`) -----------------------


def _text(name: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise ModelfileError(f"'{name}' must be text, got {_kind(value)}", (name,))
        return value

    return check


def check_from(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ModelfileError(
            "'from' must name a model, a GGUF file or a source, e.g. smollm2:135m", ("from",)
        )
    return value.strip()


def check_quantize(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ModelfileError(
            f"'quantize' must name a type like Q4_K_M, got {_kind(value)}", ("quantize",)
        )
    try:
        return check_quantization(value)
    except SourceError as e:
        raise ModelfileError(str(e), ("quantize",)) from None


def check_template(value: Any) -> str:
    """A Jinja chat template (as GGUF files carry) or a Go template (as Ollama's)."""
    template = _text("template")(value)
    if (problem := template_error(template)) is not None:
        raise ModelfileError(problem, ("template",))
    return template


# Parameters Ollama's Modelfiles may set that corral's runtime has no use for (GPU and
# thread placement, memory mapping) or does not implement (mirostat, tail-free and
# typical sampling, presence and frequency penalties, speculative decoding's
# draft_num_predict): skipped with a warning, as the
# API skips such options, so an Ollama Modelfile still creates.
IGNORED_PARAMETERS = frozenset(
    {
        "mirostat", "mirostat_eta", "mirostat_tau", "tfs_z", "typical_p",
        "presence_penalty", "frequency_penalty", "penalize_newline", "num_keep",
        "num_gpu", "main_gpu", "low_vram", "num_thread", "num_batch", "numa",
        "use_mmap", "use_mlock", "vocab_only", "f16_kv", "logits_all", "num_gqa",
        "draft_num_predict",
    }
)  # fmt: skip


def ignored_parameter(name: str) -> str | None:
    """The warning for an Ollama parameter corral skips; None for the others."""
    if name not in IGNORED_PARAMETERS:
        return None
    return f"ignoring parameter '{name}': corral does not use it"


def parameter_warnings(value: Any) -> dict[str, str]:
    """Parameter name -> warning, for the parameters of a mapping that corral skips."""
    if not isinstance(value, Mapping):
        return {}
    return {str(k): w for k in value if (w := ignored_parameter(str(k))) is not None}


def coerce_parameter(name: str, value: Any) -> Any:
    """`value` as the type parameter `name` takes; text is parsed (classic files send text)."""
    where = ("parameters", name)
    if name not in PARAMETER_TYPES:
        known = ", ".join(PARAMETER_TYPES)
        raise ModelfileError(f"unknown parameter '{shown(name)}' (known: {known})", where)
    if name == "stop":
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(isinstance(s, str) and s for s in items):
            raise ModelfileError("parameter 'stop' must be a string or a list of strings", where)
        return list(items)
    number = _number(value) if isinstance(value, str) else value
    integer = PARAMETER_TYPES[name] == (int,)
    if isinstance(number, float) and integer and number.is_integer():
        number = int(number)
    if isinstance(number, bool) or not isinstance(number, PARAMETER_TYPES[name]):
        wanted = "an integer" if integer else "a number"
        raise ModelfileError(f"parameter '{name}' must be {wanted}, got {shown(str(value))}", where)
    low, high = LOWER_BOUNDS.get(name), UPPER_BOUNDS.get(name)
    if (low is not None and number < low) or (high is not None and number > high):
        span = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ModelfileError(f"parameter '{name}' must be {span}, got {number}", where)
    return number


def check_parameters(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ModelfileError("'parameters' must map names to values", ("parameters",))
    return {
        str(k): coerce_parameter(str(k), v)
        for k, v in value.items()
        if ignored_parameter(str(k)) is None
    }


def check_message(value: Any, index: int = 0) -> dict[str, str]:
    where = ("messages", index)
    if not isinstance(value, Mapping) or not isinstance(value.get("content", ""), str):
        raise ModelfileError("each message needs a 'role' and a 'content' text", where)
    role = value.get("role")
    if role not in ROLES:
        raise ModelfileError(f"message role must be one of {', '.join(ROLES)}", where)
    return {"role": role, "content": value.get("content") or ""}


def check_messages(value: Any) -> tuple[dict[str, str], ...]:
    if not isinstance(value, list | tuple):
        raise ModelfileError("'messages' must be a list of {role, content}", ("messages",))
    return tuple(check_message(m, i) for i, m in enumerate(value))


def check_license(value: Any) -> str:
    """One license text, or several (a list, or LICENSE given more than once) joined."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(s, str) for s in items):
        raise ModelfileError("'license' must be text or a list of texts", ("license",))
    return LICENSE_SEPARATOR.join(items)


# Modelfile field -> check of its raw value (the YAML key is the field's name, `from`)
FIELDS: dict[str, Callable[[Any], Any]] = {
    "from": check_from,
    "quantize": check_quantize,
    "parameters": check_parameters,
    "template": check_template,
    "system": _text("system"),
    "messages": check_messages,
    "license": check_license,
}
_ATTRIBUTE = {"from": "from_"}


def check_fields(values: Mapping[str, Any]) -> dict[str, Any]:
    """Check raw field values (YAML keys) into Modelfile attributes; the first problem raises."""
    checked: dict[str, Any] = {}
    for key, value in values.items():
        if key in REFUSED:
            raise ModelfileError(REFUSED[key], (key,))
        if key not in FIELDS:
            known = ", ".join(FIELDS)
            raise ModelfileError(f"unknown field '{shown(str(key))}' (known: {known})", (key,))
        checked[_ATTRIBUTE.get(key, key)] = FIELDS[key](value)
    return checked


def resolve_from(text: str, base_dir: Path | None) -> str:
    """FROM as given, but a relative path taken from the Modelfile's folder (as Ollama
    does, a bare word naming a file or folder there is that path, not a model name)."""
    hub_name = is_hf_name(text) or is_ms_name(text)
    if "://" in text or text.startswith(("/", "~", "file:")) or hub_name:
        return text
    explicit = text.startswith(("./", "../")) or looks_like_path(text)
    if base_dir is not None and (explicit or (base_dir / text).exists()):
        return os.path.normpath(base_dir / text)
    if explicit:
        raise ModelfileError(
            f"FROM {shown(text)} is a relative path, and there is no Modelfile folder to take "
            "it from: give an absolute path",
            ("from",),
        )
    return text


def _kind(value: Any) -> str:
    names = {dict: "a mapping", list: "a list", type(None): "nothing", bool: "a boolean"}
    return names.get(type(value), type(value).__name__)


def _number(text: str) -> int | float | str:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text
