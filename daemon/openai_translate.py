"""Translation between OpenAI's API and the native one, after Ollama's openai/openai.go.

Requests become native requests (ChatRequest, GenerateRequest, EmbedRequest)
and native answer events become OpenAI bodies, so /v1 runs through the very
code /api runs. The mapping:

- `max_tokens` / `max_completion_tokens` -> num_predict; `temperature` and
  `top_p` -> themselves, defaulting to OpenAI's 1.0 as Ollama does; `seed`,
  `stop` (a string or a list) -> themselves.
- `frequency_penalty` / `presence_penalty`: corral's sampler has no such
  penalties; non-zero values pass as options and are ignored with the
  daemon's usual "ignoring unsupported option(s)" warning.
- `logprobs` (and chat's `top_logprobs`) -> the native ones; the answer's log
  probabilities in OpenAI's shapes (chat's `content` list, completions' legacy lists).
- `n` > 1, `best_of` > 1, `logit_bias`, `echo`: refused with a 400 naming the
  parameter. `tools` and a JSON `response_format` reach the native handler,
  which refuses them until tool calling and structured output exist.
- The `developer` role is `system`; text parts of a message are joined;
  image and audio parts are refused.
- /v1/completions renders its prompt through the model's template, as
  Ollama's does; done reasons other than "length" finish as "stop".
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from corral.client.api import (
    ChatRequest,
    ChatResponse,
    GenerateRequest,
    GenerateResponse,
    Message,
    Options,
    parse_time,
)
from corral.client.api import openai_bodies as oai
from corral.daemon.errors import RequestError
from corral.daemon.openai_logprobs import (
    chat_logprobs,
    completion_bytes,
    completion_logprobs,
)

FINGERPRINT = "fp_corral"
MAX_TOP = 20  # chat's top_logprobs
MAX_COMPLETION_TOP = 5  # the legacy completions' logprobs
FINISH_REASONS = {"stop": "stop", "length": "length"}
ROLES = {"developer": "system"}
TEXT_PART = "text"
JSON_FORMATS: dict[str, Any] = {"text": None, "json_object": "json"}


class InvalidParam(RequestError):
    """A request parameter corral refuses; OpenAI's error names it in `param`."""

    def __init__(self, param: str, message: str, status: int = 400) -> None:
        super().__init__(message, status)
        self.param = param


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


# ----- requests --------------------------------------------------------------------


def chat_request(req: oai.ChatCompletionRequest) -> ChatRequest:
    if not req.messages:
        raise InvalidParam("messages", "'messages' must hold at least one message")
    max_tokens = req.max_completion_tokens if req.max_tokens is None else req.max_tokens
    if req.logprobs is not None and not isinstance(req.logprobs, bool):
        raise InvalidParam("logprobs", "'logprobs' must be true or false")
    if req.top_logprobs is not None and not req.logprobs:
        raise InvalidParam("top_logprobs", "'top_logprobs' needs 'logprobs' set to true")
    _check_top("top_logprobs", req.top_logprobs, MAX_TOP)
    return ChatRequest(
        model=req.model,
        messages=tuple(_message(i, m) for i, m in enumerate(req.messages)),
        options=_options(req, max_tokens),
        tools=req.tools or None,
        format=_format(req.response_format),
        logprobs=req.logprobs,
        top_logprobs=req.top_logprobs,
    )


def completion_request(req: oai.CompletionRequest) -> GenerateRequest:
    for param, refused in (("echo", req.echo), ("best_of", (req.best_of or 1) > 1)):
        if refused:
            raise InvalidParam(param, f"'{param}' is not supported by corral")
    prompts = (req.prompt,) if isinstance(req.prompt, str) else req.prompt
    if len(prompts) != 1 or not prompts[0]:
        raise InvalidParam("prompt", "'prompt' must be one non-empty string")
    if isinstance(req.logprobs, bool):
        raise InvalidParam("logprobs", "'logprobs' must be how many of the likeliest (0-5)")
    _check_top("logprobs", req.logprobs, MAX_COMPLETION_TOP)
    return GenerateRequest(
        model=req.model,
        prompt=prompts[0],
        suffix=req.suffix or None,
        options=_options(req, req.max_tokens),
        logprobs=req.logprobs is not None or None,
        top_logprobs=req.logprobs,
    )


def _check_top(param: str, value: object, most: int) -> None:
    if value is not None and (not isinstance(value, int) or not 0 <= value <= most):
        raise InvalidParam(param, f"'{param}' must be a number from 0 to {most}, got {value!r}")


def embed_inputs(req: oai.EmbeddingRequest) -> tuple[str, ...]:
    if req.encoding_format not in (None, "float", "base64"):
        raise InvalidParam("encoding_format", "'encoding_format' must be 'float' or 'base64'")
    inputs = (req.input,) if isinstance(req.input, str) else req.input
    if not inputs or not all(inputs):
        raise InvalidParam("input", "'input' must be a non-empty string or list of them")
    return inputs


def _options(req: oai.Sampling, max_tokens: int | None) -> Options:
    if (req.n or 1) > 1:
        raise InvalidParam("n", "only n=1 is supported: corral returns one choice per request")
    if req.logit_bias:
        raise InvalidParam("logit_bias", "'logit_bias' is not supported by corral yet")
    if max_tokens is not None and max_tokens < 1:
        raise InvalidParam("max_tokens", f"'max_tokens' must be 1 or more, got {max_tokens}")
    values: dict[str, Any] = {
        "temperature": 1.0 if req.temperature is None else req.temperature,
        "top_p": 1.0 if req.top_p is None else req.top_p,
    }
    if max_tokens is not None:
        values["num_predict"] = max_tokens
    if req.seed is not None:
        values["seed"] = req.seed
    if req.stop:
        values["stop"] = [req.stop] if isinstance(req.stop, str) else list(req.stop)
    for penalty in ("frequency_penalty", "presence_penalty"):
        if getattr(req, penalty):  # unknown to corral's sampler: ignored with a warning
            values[penalty] = getattr(req, penalty)
    return Options.from_dict(values)


def _message(i: int, message: oai.ChatMessage) -> Message:
    if message.tool_calls:
        raise InvalidParam("messages", f"message {i} has tool calls: not supported by corral yet")
    content = message.content
    if content is None:
        content = ""
    elif not isinstance(content, str):
        kinds = {str(part.get("type")) for part in content}
        if kinds - {TEXT_PART}:
            raise InvalidParam(
                "messages",
                f"message {i} has {', '.join(sorted(kinds - {TEXT_PART}))} content: "
                "corral supports text only",
            )
        content = "\n".join(str(part.get("text", "")) for part in content)
    return Message(role=ROLES.get(message.role, message.role), content=content)


def _format(response_format: dict[str, Any] | None) -> Any:
    if not response_format:
        return None
    kind = str(response_format.get("type", "text"))
    if kind in JSON_FORMATS:
        return JSON_FORMATS[kind]
    schema = response_format.get("json_schema") or {}
    return schema.get("schema", {"type": "object"}) if kind == "json_schema" else kind


# ----- answers ---------------------------------------------------------------------


def usage(final: GenerateResponse | ChatResponse) -> oai.Usage:
    prompt = final.prompt_tokens or final.prompt_eval_count or 0
    completion = final.eval_count or 0
    return oai.Usage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
    )


def finish_reason(final: GenerateResponse | ChatResponse) -> str:
    return FINISH_REASONS.get(final.done_reason or "stop", "stop")


def created(event: GenerateResponse | ChatResponse) -> int:
    return int(parse_time(event.created_at).timestamp())


def chat_completion(completion_id: str, model: str, final: ChatResponse) -> oai.ChatCompletion:
    choice = oai.Choice(
        message=oai.AssistantMessage(content=final.message.content),
        finish_reason=finish_reason(final),
        logprobs=chat_logprobs(final.logprobs),
    )
    return oai.ChatCompletion(
        id=completion_id,
        created=created(final),
        model=model,
        system_fingerprint=FINGERPRINT,
        choices=(choice,),
        usage=usage(final),
    )


def completion(completion_id: str, model: str, final: GenerateResponse) -> oai.Completion:
    choice = oai.CompletionChoice(
        text=final.response,
        finish_reason=finish_reason(final),
        logprobs=completion_logprobs(final.logprobs),
    )
    return oai.Completion(
        id=completion_id,
        created=created(final),
        model=model,
        system_fingerprint=FINGERPRINT,
        choices=(choice,),
        usage=usage(final),
    )


@dataclass
class _Chunks:
    """What a stream's chunks share: id, creation time, model, and the way it ends: the
    finish reason in a chunk of its own, then usage in a last chunk without choices when
    asked for (the chunks before then say `"usage": null`, as OpenAI's do)."""

    model: str
    include_usage: bool
    id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))
    id_prefix: ClassVar[str]
    chunk_types: ClassVar[tuple[type[Any], type[Any]]]  # without usage, with `"usage": null`

    def __post_init__(self) -> None:
        self.id = self.id or new_id(self.id_prefix)

    def _finish(self, event: ChatResponse | GenerateResponse, choice: Any) -> list[Any]:
        last = [self._chunk(choice)]
        if self.include_usage:
            last.append(self._chunk(None, usage(event)))
        return last

    def _chunk(self, choice: Any, usage: oai.Usage | None = None) -> Any:
        chunk_type = self.chunk_types[self.include_usage]
        return chunk_type(
            id=self.id,
            created=self.created,
            model=self.model,
            system_fingerprint=FINGERPRINT,
            choices=(choice,) if choice else (),
            usage=usage,
        )


@dataclass
class ChatChunks(_Chunks):
    """Native chat events -> chat.completion.chunk objects; the role comes with the first."""

    id_prefix: ClassVar[str] = "chatcmpl"
    chunk_types: ClassVar[tuple[type[Any], type[Any]]] = (
        oai.ChatCompletionChunk,
        oai.ChatCompletionChunkWithUsage,
    )
    started: bool = False

    def __call__(self, event: ChatResponse) -> list[oai.ChatCompletionChunk]:
        if event.done:
            return self._finish(event, oai.ChunkChoice(finish_reason=finish_reason(event)))
        if self.started and not event.message.content:
            return []
        role = None if self.started else "assistant"
        self.started = True
        delta = oai.Delta(role=role, content=event.message.content)
        return [self._chunk(oai.ChunkChoice(delta=delta, logprobs=chat_logprobs(event.logprobs)))]


@dataclass
class CompletionChunks(_Chunks):
    """Native generate events -> text_completion chunks."""

    id_prefix: ClassVar[str] = "cmpl"
    chunk_types: ClassVar[tuple[type[Any], type[Any]]] = (oai.Completion, oai.CompletionWithUsage)
    sent: bytes = b""  # the bytes of the tokens sent so far: where the next ones start

    def __call__(self, event: GenerateResponse) -> list[oai.Completion]:
        if event.done:
            return self._finish(event, oai.CompletionChoice(finish_reason=finish_reason(event)))
        if not event.response:
            return []
        logprobs = completion_logprobs(event.logprobs, self.sent)
        self.sent += completion_bytes(event.logprobs)
        return [self._chunk(oai.CompletionChoice(text=event.response, logprobs=logprobs))]
