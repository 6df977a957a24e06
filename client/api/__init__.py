"""The wire types of corral's HTTP API, shared by the daemon and its clients.

One frozen dataclass per request and response body, with Ollama's field names
(api/types.go), and `to_json()` / `from_json()`; decoding checks every field's
JSON type and raises `WireError` naming the field (the daemon answers 400).
It also says where a daemon keeps models and listens by default, since both
sides must agree. This package imports nothing of corral outside itself.

    codec.py      Wire base class, WireError, the type-checked JSON codec
    bodies.py     the request and response dataclasses, Options
    models.py     /api/create, /api/copy and /api/ps
    embedding.py  /api/embed and /api/embeddings
    openai_bodies.py  the OpenAI-compatible /v1 bodies (imported as a module)
    values.py     durations (keep_alive) and timestamps
    locations.py  CORRAL_HOME, the default socket path, CORRAL_HOST parsing
"""

from corral.client.api.bodies import (
    ChatRequest,
    ChatResponse,
    DeleteRequest,
    ErrorResponse,
    GenerateRequest,
    GenerateResponse,
    ListModelResponse,
    ListResponse,
    Logprob,
    Message,
    Metrics,
    ModelDetails,
    Options,
    ProgressResponse,
    PullRequest,
    ShowRequest,
    ShowResponse,
    TokenLogprob,
    VersionResponse,
)
from corral.client.api.codec import Wire, WireError, nullable, wire
from corral.client.api.embedding import (
    EmbeddingsRequest,
    EmbeddingsResponse,
    EmbedRequest,
    EmbedResponse,
)
from corral.client.api.locations import (
    APP_NAME,
    ENV_API_TOKEN,
    ENV_HOME,
    ENV_HOST,
    ENV_KEEP_ALIVE,
    ENV_SOCKET,
    SOCKET_NAME,
    default_home,
    default_socket_path,
    parse_host,
)
from corral.client.api.models import (
    CopyRequest,
    CreateRequest,
    ProcessModelResponse,
    ProcessResponse,
    decode_modelfile,
)
from corral.client.api.values import format_time, now_rfc3339, parse_duration, parse_time

__all__ = [
    "APP_NAME",
    "ENV_API_TOKEN",
    "ENV_HOME",
    "ENV_HOST",
    "ENV_KEEP_ALIVE",
    "ENV_SOCKET",
    "SOCKET_NAME",
    "ChatRequest",
    "ChatResponse",
    "CopyRequest",
    "CreateRequest",
    "DeleteRequest",
    "EmbedRequest",
    "EmbedResponse",
    "EmbeddingsRequest",
    "EmbeddingsResponse",
    "ErrorResponse",
    "GenerateRequest",
    "GenerateResponse",
    "ListModelResponse",
    "ListResponse",
    "Logprob",
    "Message",
    "Metrics",
    "ModelDetails",
    "Options",
    "ProcessModelResponse",
    "ProcessResponse",
    "ProgressResponse",
    "PullRequest",
    "ShowRequest",
    "ShowResponse",
    "TokenLogprob",
    "VersionResponse",
    "Wire",
    "WireError",
    "decode_modelfile",
    "default_home",
    "default_socket_path",
    "format_time",
    "now_rfc3339",
    "nullable",
    "parse_duration",
    "parse_host",
    "parse_time",
    "wire",
]
