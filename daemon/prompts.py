"""From a request to the conversation and prompt token ids the engine runs.

/api/generate renders its prompt through the model's chat template as a
single user turn (with the request's or the model's system prompt) unless
`raw` is set, as Ollama does. /api/chat renders the model's example messages
followed by the request's, with the model's system prompt first when the
request brings none.

/api/generate's `context` (the token ids a previous answer returned) is
continued at the token level: the new turn's tokens follow it, without a
second BOS, so the session's KV cache of that conversation is reused.

/api/generate's `suffix` asks for fill-in-the-middle, built as llama.cpp's
/infill builds it: [BOS] FIM_PRE prompt FIM_SUF suffix FIM_MID, from the FIM
tokens the vocabulary declares (GGUF keys, else the well-known token texts).
A model without them cannot insert: that is a 400, as in Ollama.

A template (the request's `template`, else the Modelfile's TEMPLATE, else the
GGUF's) is Jinja, as GGUF files carry, or Go's template syntax, as Ollama's
Modelfiles are written; a Go template is rendered as Ollama renders it
(runtime/ollama_template.py), and one that reads `.Suffix` is how the model
inserts, as in Ollama.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import lru_cache

from corral.client.api import ChatRequest, GenerateRequest, Message
from corral.daemon.errors import RequestError
from corral.registry.manifest import Manifest
from corral.runtime.chat_template import ChatTemplate
from corral.runtime.engine import Engine
from corral.runtime.kv_cache import ContextFull
from corral.runtime.ollama_template import OllamaTemplate, is_go_template, template_error
from corral.runtime.tokenizer.vocab import FIM_ROLES

log = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant", "tool")
Conversation = list[dict[str, str]]

# request field -> why it is refused (rather than silently ignored)
UNSUPPORTED: tuple[tuple[str, str], ...] = (
    ("images", "images are not supported yet: corral has no vision models"),
    ("format", "structured output ('format') is not supported yet"),
    ("tools", "tool calling ('tools') is not supported yet"),
    ("think", "thinking ('think') is not supported: corral has no thinking models yet"),
)


def refuse_unsupported(request: GenerateRequest | ChatRequest) -> None:
    for name, reason in UNSUPPORTED:
        if getattr(request, name, None):
            raise RequestError(reason)
    for message in getattr(request, "messages", ()):
        if message.images:
            raise RequestError(dict(UNSUPPORTED)["images"])
    template = getattr(request, "template", None)
    if template and (problem := template_error(template)) is not None:
        raise RequestError(problem)
    if getattr(request, "raw", False):
        _check_raw(request)  # type: ignore[arg-type]
    if getattr(request, "suffix", None):
        _check_infill(request)  # type: ignore[arg-type]


def _check_raw(request: GenerateRequest) -> None:
    """What raw mode (the prompt sent as is, no template) cannot be combined with."""
    if request.context:
        raise RequestError("raw mode does not support 'context': send the whole prompt instead")
    if request.system:
        raise RequestError("raw mode does not support 'system': put it in the prompt yourself")


def _check_infill(request: GenerateRequest) -> None:
    """What `suffix` (fill-in-the-middle) cannot be combined with."""
    if request.raw:
        raise RequestError(
            "raw mode does not support 'suffix': put the model's fill-in-the-middle tokens "
            "in the prompt yourself, or drop 'raw'"
        )
    if request.context:
        raise RequestError("'suffix' does not support 'context': send the whole prefix as 'prompt'")


def generate_conversation(request: GenerateRequest, manifest: Manifest) -> Conversation:
    """The system prompt, the model's example messages (a Modelfile's MESSAGE turns,
    unless the request continues a `context`), then the prompt, as Ollama builds it."""
    system = request.system if request.system is not None else manifest.system
    turns = [{"role": "system", "content": system}] if system else []
    if not request.context:
        turns += [dict(m) for m in manifest.messages]
    return [*turns, {"role": "user", "content": request.prompt}]


def chat_conversation(messages: Sequence[Message], manifest: Manifest) -> Conversation:
    for i, message in enumerate(messages):
        if message.role not in ROLES:
            raise RequestError(
                f"message {i} has role '{message.role}'; use one of {', '.join(ROLES)}"
            )
    turns = [dict(m) for m in manifest.messages]
    turns += [{"role": m.role, "content": m.content} for m in messages]
    if manifest.system and not (messages and messages[0].role == "system"):
        turns.insert(0, {"role": "system", "content": manifest.system})
    return turns


def render(
    engine: Engine, manifest: Manifest, conversation: Conversation, template: str | None = None
) -> str:
    """The prompt text through `template` (a request's), else the manifest's, else the
    GGUF's. A template is Jinja, as GGUF files carry, or Ollama's Go template syntax."""
    source = template or manifest.template
    if source is None:
        return engine.render_chat(conversation, add_generation_prompt=True)
    if (go := go_template(source)) is not None:
        return go.render(conversation)
    own = engine.template
    jinja = ChatTemplate(source, bos_token=own.bos_token, eos_token=own.eos_token)
    return jinja.render(conversation, add_generation_prompt=True)


@lru_cache(maxsize=32)
def go_template(source: str) -> OllamaTemplate | None:
    """The template, if `source` is written in Go's template syntax (Ollama's)."""
    return OllamaTemplate(source) if is_go_template(source) else None


def chat_prompt(
    engine: Engine, manifest: Manifest, conversation: Conversation, truncate: bool = True
) -> list[int]:
    """Token ids of the rendered chat. When they do not fit the context window, the oldest
    messages are dropped, as Ollama does: system messages and the last message stay, and
    what is kept starts at a user message (templates such as Gemma's insist on it).
    Without `truncate` such a chat is refused instead (ContextFull)."""
    encoded: dict[int, list[int] | ContextFull] = {}  # the chat kept from message i on, or
    limit = engine.num_ctx  # why it is certainly too long (not encoded: it could be huge)

    def ids_from(start: int) -> list[int] | ContextFull:
        if start not in encoded:
            kept = [m for i, m in enumerate(conversation) if i >= start or m["role"] == "system"]
            try:
                encoded[start] = encode(engine, render(engine, manifest, kept))
            except ContextFull as e:
                encoded[start] = e
        return encoded[start]

    def fits(start: int) -> bool:
        ids = ids_from(start)
        return not isinstance(ids, ContextFull) and len(ids) < limit

    if fits(0):
        return ids_from(0)  # type: ignore[return-value]
    if not truncate:
        raise ContextFull(
            f"the chat does not fit the context window of {limit} tokens: raise num_ctx, "
            "or leave 'truncate' unset to drop the oldest messages"
        )
    starts = [i for i, m in enumerate(conversation) if i > 0 and m["role"] == "user"]
    if not starts or starts[-1] != len(conversation) - 1:
        starts.append(len(conversation) - 1)  # at worst the last message alone
    lo, hi = 0, len(starts) - 1  # the earliest start that fits; the last is the fallback
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(starts[mid]):
            hi = mid
        else:
            lo = mid + 1
    log.info(
        "chat over num_ctx %d: dropped messages before message %d of %d",
        limit,
        starts[lo],
        len(conversation),
    )
    kept = ids_from(starts[lo])
    if isinstance(kept, ContextFull):  # even the last message alone, certainly
        raise kept
    return kept  # too long still, it is refused with its length when generation starts


def encode(engine: Engine, text: str, check_length: bool = True) -> list[int]:
    """Token ids of a prompt, special tokens parsed; no second BOS if the text has one.
    A text certainly longer than the context window is refused before it is encoded
    (ContextFull): a huge prompt would take minutes."""
    tokenizer = engine.tokenizer
    if check_length and (fewest := tokenizer.fewest_tokens(text)) >= engine.num_ctx:
        raise ContextFull(
            f"the prompt is at least {fewest} tokens, more than the context window of "
            f"{engine.num_ctx}: shorten it or raise num_ctx"
        )
    bos = engine.template.bos_token
    add_special = not (bos and text.startswith(bos))
    return tokenizer.encode(text, add_special=add_special, parse_special=True)


def continue_context(engine: Engine, context: Sequence[int], text: str) -> list[int]:
    """`context` (a previous answer's token ids) followed by the tokens of `text`."""
    vocab = engine.tokenizer.vocab_size
    bad = next((t for t in context if not 0 <= t < vocab), None)
    if bad is not None:
        raise RequestError(
            f"'context' holds token {bad}, not in this model's vocabulary (0..{vocab - 1}): "
            "send back the context of an answer from the same model"
        )
    bos = engine.template.bos_token
    if bos and engine.tokenizer.add_bos:  # a template's BOS starts a sequence, not a turn
        text = text.removeprefix(bos)
    if (fewest := len(context) + engine.tokenizer.fewest_tokens(text)) >= engine.num_ctx:
        raise ContextFull(
            f"the context and prompt are at least {fewest} tokens, more than the context "
            f"window of {engine.num_ctx}: shorten them or raise num_ctx"
        )
    return [*context, *engine.tokenizer.encode(text, add_special=False, parse_special=True)]


def infill(engine: Engine, name: str, prefix: str, suffix: str) -> list[int]:
    """The fill-in-the-middle prompt: [BOS] FIM_PRE prefix FIM_SUF suffix FIM_MID.

    As llama.cpp's /infill, the texts are tokenized as plain text (no special tokens
    parsed from them) and, when long, cut to fit half the context window 3:1: the end
    of the prefix and the start of the suffix, the parts next to the gap, are kept.
    """
    tokenizer = engine.tokenizer
    pre, suf, mid = (tokenizer.special_id(role) for role in FIM_ROLES)
    if pre is None or suf is None or mid is None:
        raise RequestError(
            f"{name} does not support insert: its vocabulary has no fill-in-the-middle "
            "tokens; send the request without 'suffix', or use a code model that has them"
        )
    budget = engine.num_ctx // 2
    prefix = tokenizer.suffix_with_tokens(prefix, budget)  # enough of a huge text to cut
    suffix = tokenizer.prefix_with_tokens(suffix, budget)
    before = tokenizer.encode(prefix, add_special=False, parse_special=False)
    after = tokenizer.encode(suffix, add_special=False, parse_special=False)
    keep_before, keep_after = min(len(before), 3 * budget // 4), min(len(after), budget // 4)
    if (keep_before, keep_after) != (len(before), len(after)):
        log.info(
            "%s: fill-in-the-middle input cut to %d prefix and %d suffix tokens (of %d and %d)",
            name,
            keep_before,
            keep_after,
            len(before),
            len(after),
        )
    bos = [tokenizer.bos_id] if tokenizer.add_bos and tokenizer.bos_id is not None else []
    return [*bos, pre, *before[len(before) - keep_before :], suf, *after[:keep_after], mid]
