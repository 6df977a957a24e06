"""Bodies of the OpenAI-compatible API (/v1), with OpenAI's field names.

Requests keep only the fields corral reads; unknown ones are ignored, as
Ollama does. Responses send `null` where OpenAI does (`finish_reason` of a
chunk, `logprobs`, an error's `param` and `code`).
"""

from __future__ import annotations

from typing import Any

from corral.client.api.codec import Wire, nullable, wire

# ----- requests ------------------------------------------------------------------


@wire
class ChatMessage(Wire):
    """A message: `content` is a string or a list of parts ({"type": "text", "text": ...})."""

    role: str
    content: str | tuple[dict[str, Any], ...] | None = None
    name: str | None = None
    tool_calls: tuple[Any, ...] | None = None


@wire
class StreamOptions(Wire):
    include_usage: bool = False


@wire
class Sampling(Wire):
    """The sampling fields /v1/chat/completions and /v1/completions share."""

    model: str = ""
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | tuple[str, ...] | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    n: int | None = None
    logprobs: Any = None  # chat: true/false; completions: how many of the most likely (0-5)
    logit_bias: dict[str, Any] | None = None
    user: str | None = None


@wire
class ChatCompletionRequest(Sampling):
    messages: tuple[ChatMessage, ...] = ()
    top_logprobs: int | None = None
    max_completion_tokens: int | None = None
    response_format: dict[str, Any] | None = None
    tools: tuple[Any, ...] | None = None


@wire
class CompletionRequest(Sampling):
    prompt: str | tuple[str, ...] = ""
    suffix: str | None = None
    echo: bool = False
    best_of: int | None = None


@wire
class EmbeddingRequest(Wire):
    model: str = ""
    input: str | tuple[str, ...] = ()
    encoding_format: str | None = None  # "float" (default) or "base64"
    dimensions: int | None = None


# ----- responses ---------------------------------------------------------------


@wire
class Usage(Wire):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


@wire
class AssistantMessage(Wire):
    role: str = "assistant"
    content: str = ""


@wire
class Choice(Wire):
    index: int = 0
    message: AssistantMessage = AssistantMessage()
    finish_reason: str | None = nullable()
    logprobs: Any = nullable()


@wire
class ChatCompletion(Wire):
    id: str
    object: str = "chat.completion"
    created: int
    model: str
    system_fingerprint: str
    choices: tuple[Choice, ...]
    usage: Usage


@wire
class Delta(Wire):
    role: str | None = None
    content: str | None = None


@wire
class ChunkChoice(Wire):
    index: int = 0
    delta: Delta = Delta()
    finish_reason: str | None = nullable()
    logprobs: Any = nullable()


@wire
class ChatCompletionChunk(Wire):
    id: str
    object: str = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str
    choices: tuple[ChunkChoice, ...]
    usage: Usage | None = None  # only in the extra last chunk `include_usage` asks for


@wire
class ChatCompletionChunkWithUsage(ChatCompletionChunk):
    """A chunk of a stream that asked for usage: `"usage": null` until the last one."""

    usage: Usage | None = nullable()


@wire
class CompletionChoice(Wire):
    text: str = ""
    index: int = 0
    finish_reason: str | None = nullable()
    logprobs: Any = nullable()


@wire
class Completion(Wire):
    """A /v1/completions answer, or one chunk of its stream (same object type)."""

    id: str
    object: str = "text_completion"
    created: int
    model: str
    system_fingerprint: str
    choices: tuple[CompletionChoice, ...]
    usage: Usage | None = None


@wire
class CompletionWithUsage(Completion):
    """A chunk of a completion stream that asked for usage: `"usage": null` until the last."""

    usage: Usage | None = nullable()


@wire
class Embedding(Wire):
    object: str = "embedding"
    embedding: tuple[float, ...] | str  # floats, or base64 of little-endian float32
    index: int


@wire
class EmbeddingUsage(Wire):
    prompt_tokens: int
    total_tokens: int


@wire
class EmbeddingList(Wire):
    object: str = "list"
    data: tuple[Embedding, ...]
    model: str
    usage: EmbeddingUsage


@wire
class ModelCard(Wire):
    id: str
    object: str = "model"
    created: int
    owned_by: str


@wire
class ModelList(Wire):
    object: str = "list"
    data: tuple[ModelCard, ...] = ()


@wire
class ErrorDetail(Wire):
    message: str
    type: str
    param: str | None = nullable()
    code: str | None = nullable()


@wire
class OpenAIErrorResponse(Wire):
    error: ErrorDetail
