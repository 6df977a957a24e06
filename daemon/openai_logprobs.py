"""Native log probabilities (client/api Logprob) in OpenAI's two shapes.

Chat completions: `{"content": [{token, logprob, bytes, top_logprobs: [...]}],
"refusal": null}`. The legacy completions: parallel lists `tokens`,
`token_logprobs`, `top_logprobs` (one {token: logprob} object a position) and
`text_offset` (where each token starts in the completion's text, in characters).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from corral.client.api import Logprob, TokenLogprob


def _entry(t: TokenLogprob) -> dict[str, Any]:
    return {"token": t.token, "logprob": t.logprob, "bytes": list(t.bytes or ())}


def chat_logprobs(logprobs: Sequence[Logprob] | None) -> dict[str, Any] | None:
    if not logprobs:
        return None
    content = [
        _entry(lp) | {"top_logprobs": [_entry(t) for t in lp.top_logprobs or ()]} for lp in logprobs
    ]
    return {"content": content, "refusal": None}


def completion_logprobs(
    logprobs: Sequence[Logprob] | None, before: bytes = b""
) -> dict[str, Any] | None:
    """The legacy shape. `before`: the bytes of the completion's earlier tokens (a stream's
    earlier chunks), from which each token's `text_offset` is counted in characters."""
    if not logprobs:
        return None
    starts = []
    for lp in logprobs:
        starts.append(len(before.decode("utf-8", errors="ignore")))  # whole characters
        before += bytes(lp.bytes or ())
    return {
        "tokens": [_legacy_token(lp) for lp in logprobs],
        "token_logprobs": [lp.logprob for lp in logprobs],
        "top_logprobs": [
            {_legacy_token(t): t.logprob for t in lp.top_logprobs or ()} for lp in logprobs
        ],
        "text_offset": starts,
    }


def completion_bytes(logprobs: Sequence[Logprob] | None) -> bytes:
    """The bytes of `logprobs`' tokens, for the `before` of a stream's next chunk."""
    return b"".join(bytes(lp.bytes or ()) for lp in logprobs or ())


def _legacy_token(t: TokenLogprob) -> str:
    """The token's text, or `bytes:\\xNN...` for one that is not whole UTF-8 characters,
    as OpenAI writes them (so that two such tokens stay two keys of `top_logprobs`)."""
    raw = bytes(t.bytes or ())
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in raw)
