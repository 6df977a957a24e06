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
    logprobs: Sequence[Logprob] | None, offset: int = 0
) -> dict[str, Any] | None:
    """The legacy shape; `offset`: where the first token starts in the whole completion."""
    if not logprobs:
        return None
    starts = []
    for lp in logprobs:
        starts.append(offset)
        offset += len(lp.token)
    return {
        "tokens": [lp.token for lp in logprobs],
        "token_logprobs": [lp.logprob for lp in logprobs],
        "top_logprobs": [{t.token: t.logprob for t in lp.top_logprobs or ()} for lp in logprobs],
        "text_offset": starts,
    }
