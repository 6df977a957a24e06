"""The request and response bodies, with Ollama's field names (api/types.go)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import field
from typing import Any, ClassVar, Self

from corral.client.api.codec import Wire, wire
from corral.client.api.values import parse_duration

# ----- options -----------------------------------------------------------------


# option -> (bound, whether the bound itself is allowed, what the option means)
OPTION_LOWER_BOUNDS: dict[str, tuple[float, bool, str]] = {
    "num_ctx": (1, True, "the context window in tokens"),
    "top_p": (0.0, True, "a probability mass between 0 and 1"),
    "min_p": (0.0, True, "a probability between 0 and 1"),
    "repeat_penalty": (0.0, False, "a factor, 1.0 for none"),
}


@wire
class Options(Wire):
    """Ollama's `options`: sampling and load settings; None means "model default"."""

    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    repeat_last_n: int | None = None
    seed: int | None = None
    num_predict: int | None = None
    num_ctx: int | None = None
    stop: tuple[str, ...] | None = None
    ignored: tuple[str, ...] = field(default=(), metadata={"wire": False})

    @classmethod
    def from_dict(cls, data: Any, path: str = "") -> Self:
        """Known options are type-checked; unknown ones land in `ignored`."""
        known = super().from_dict(data, path)
        names = {f.name for f in dataclasses.fields(cls)} - {"ignored"}
        unknown = tuple(sorted(k for k in data if k not in names))
        return dataclasses.replace(known, ignored=unknown)

    def out_of_range(self) -> str | None:
        """Why a value makes no sense (not finite, or below its bound), in one line; None
        if every one does. The daemon refuses such options; a chat's /set parameter too."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                return f"option '{f.name}' must be a finite number, got {value}"
        for name, (low, inclusive, meaning) in OPTION_LOWER_BOUNDS.items():
            value = getattr(self, name)
            if value is not None and (value < low if inclusive else value <= low):
                least = "at least" if inclusive else "more than"
                return f"option '{name}' must be {least} {low} ({meaning}), got {value}"
        return None

    def merged_over(self, defaults: Options) -> Options:
        """These options, with `defaults` filling what is unset."""
        values = {
            f.name: getattr(self, f.name)
            if getattr(self, f.name) is not None
            else getattr(defaults, f.name)
            for f in dataclasses.fields(self)
            if f.name != "ignored"
        }
        return Options(**values, ignored=self.ignored)


# ----- requests ------------------------------------------------------------------


def _check_keep_alive(value: str | float | None) -> None:
    if value is not None:
        parse_duration(value)


@wire
class Message(Wire):
    role: str
    content: str = ""
    images: tuple[str, ...] | None = None


@wire
class GenerateRequest(Wire):
    model: str = ""
    prompt: str = ""
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    context: tuple[int, ...] | None = None
    stream: bool = True
    raw: bool = False
    format: Any = None
    images: tuple[str, ...] | None = None
    think: Any = None  # newer Ollama clients send it; refused when set (daemon/prompts.py)
    logprobs: bool | None = None  # each generated token's log probability ...
    top_logprobs: int | None = None  # ... with this many of the most likely (0-20)
    keep_alive: str | float | None = None
    options: Options | None = None

    def __post_init__(self) -> None:
        _check_keep_alive(self.keep_alive)


@wire
class ChatRequest(Wire):
    model: str = ""
    messages: tuple[Message, ...] = ()
    stream: bool = True
    format: Any = None
    tools: tuple[Any, ...] | None = None
    think: Any = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    keep_alive: str | float | None = None
    options: Options | None = None
    truncate: bool | None = None  # false: a chat over num_ctx is refused, not cut (Ollama 0.12)

    def __post_init__(self) -> None:
        _check_keep_alive(self.keep_alive)


@wire
class PullRequest(Wire):
    _ALIASES: ClassVar[Mapping[str, str]] = {"name": "model"}
    model: str = ""
    insecure: bool = False
    stream: bool = True


@wire
class ShowRequest(Wire):
    _ALIASES: ClassVar[Mapping[str, str]] = {"name": "model"}
    model: str = ""
    verbose: bool = False
    # as Ollama's: a chat's own system prompt and parameters, shown as the model's
    system: str | None = None
    options: Options | None = None
    # corral's own: the syntax of the answer's `modelfile`, "ollama" (default) or "yaml"
    modelfile_format: str | None = None


@wire
class DeleteRequest(Wire):
    _ALIASES: ClassVar[Mapping[str, str]] = {"name": "model"}
    model: str = ""


# ----- responses ---------------------------------------------------------------


@wire
class ErrorResponse(Wire):
    error: str
    # In an error line of a stream only (its status line already said 200): the status
    # the error would have had. Ollama sends no such field; its clients ignore it.
    status: int | None = None


@wire
class VersionResponse(Wire):
    version: str  # the Ollama release whose API corral answers (clients check it)
    corral: str | None = None  # corral's own version


@wire
class Metrics(Wire):
    """Ollama's final statistics; durations in nanoseconds."""

    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None
    # The whole prompt's length (prompt_eval_count leaves out a prefix reused from the
    # KV cache). Not sent: the daemon's OpenAI-compatible API reports it as usage.
    prompt_tokens: int | None = field(default=None, metadata={"wire": False})


@wire
class TokenLogprob(Wire):
    """A token's text, its log probability and its bytes (a part of a UTF-8 character
    shows as U+FFFD in `token`; `bytes` has it whole)."""

    token: str
    logprob: float
    bytes: tuple[int, ...] | None = None


@wire
class Logprob(TokenLogprob):
    """A generated token's log probability, with the most likely ones if asked for."""

    top_logprobs: tuple[TokenLogprob, ...] | None = None


@wire
class GenerateResponse(Metrics):
    model: str
    created_at: str
    response: str = ""
    done: bool = False
    done_reason: str | None = None
    context: tuple[int, ...] | None = None
    logprobs: tuple[Logprob, ...] | None = None  # the tokens of `response`, when asked


@wire
class ChatResponse(Metrics):
    model: str
    created_at: str
    message: Message
    done: bool = False
    done_reason: str | None = None
    logprobs: tuple[Logprob, ...] | None = None  # the tokens of `message`, when asked


@wire
class ProgressResponse(Wire):
    status: str
    digest: str | None = None
    total: int | None = None
    completed: int | None = None


@wire
class ModelDetails(Wire):
    parent_model: str = ""
    format: str = ""
    family: str = ""
    families: tuple[str, ...] | None = None
    parameter_size: str = ""
    quantization_level: str = ""


@wire
class ListModelResponse(Wire):
    name: str
    model: str
    modified_at: str
    size: int
    digest: str
    details: ModelDetails = ModelDetails()


@wire
class ListResponse(Wire):
    models: tuple[ListModelResponse, ...] = ()


@wire
class ShowResponse(Wire):
    license: str = ""
    modelfile: str = ""
    parameters: str = ""
    template: str = ""
    system: str = ""
    details: ModelDetails = ModelDetails()
    model_info: dict[str, Any] = field(default_factory=dict)
    messages: tuple[Message, ...] = ()
    capabilities: tuple[str, ...] = ()
    modified_at: str | None = None
