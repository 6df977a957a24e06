"""llama.cpp as a live reference: xllamacpp's in-process llama-server, driven over its API.

`LlamaCpp(model).next_token_logprobs(context, n)` returns llama.cpp's top-n next-token
candidates after `context` (token ids), as log-softmax of the raw logits: the prompt is
evaluated in one batch (no prompt cache), one token is sampled with a logit bias that
forces a one-byte token (so the server reports probabilities at once, whatever the top
token's bytes), and the reported probabilities are those before sampling
(post_sampling_probs = false), which the bias does not touch.

`complete(request)` runs the server's /completion handler and returns its verbose answer;
`apply_template(messages)` renders a conversation with llama.cpp's own Jinja engine and
the GGUF's chat template (or the one given as `chat_template`), as llama-server's
/apply-template does.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import xllamacpp

GGML_TYPES = {"f16": xllamacpp.ggml_type.GGML_TYPE_F16, "f32": xllamacpp.ggml_type.GGML_TYPE_F32}
FLASH_ATTN = {
    "auto": xllamacpp.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_AUTO,
    "on": xllamacpp.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_ENABLED,
    "off": xllamacpp.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_DISABLED,
}
FORCED_TEXT = "."  # a one-token, one-byte piece in every vocabulary used here


@dataclass(frozen=True)
class Settings:
    """llama.cpp context settings; the defaults are llama.cpp's own (f16 KV cache, flash
    attention auto), with 2 threads."""

    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    flash_attn: str = "auto"
    n_threads: int = 2
    n_ctx: int = 512

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


EXACT = Settings(cache_type_k="f32", cache_type_v="f32", flash_attn="off")  # float math


class LlamaCpp:
    """One model loaded into an in-process llama-server."""

    def __init__(
        self, model: Path, settings: Settings = Settings(), chat_template: str | None = None
    ) -> None:
        params = xllamacpp.CommonParams()
        params.model.path = str(model)
        params.n_ctx = settings.n_ctx
        params.n_parallel = 1
        params.cpuparams.n_threads = settings.n_threads
        params.cpuparams_batch.n_threads = settings.n_threads
        params.cache_type_k = GGML_TYPES[settings.cache_type_k]
        params.cache_type_v = GGML_TYPES[settings.cache_type_v]
        params.flash_attn_type = FLASH_ATTN[settings.flash_attn]
        params.use_jinja = True
        if chat_template is not None:
            params.chat_template = chat_template
        self.server = xllamacpp.Server(params)
        forced = self.tokenize(FORCED_TEXT, add_special=False)
        if len(forced) != 1:
            raise RuntimeError(f"{model.name}: {FORCED_TEXT!r} is not one token: {forced}")
        self.forced_id = forced[0]

    def post(self, path: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(
            self.server.listening_address + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.load(response)

    def props(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.server.listening_address + "/props") as response:
            return json.load(response)

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        body = {"content": text, "add_special": add_special, "parse_special": True}
        return [int(t) for t in self.post("/tokenize", body)["tokens"]]

    def apply_template(
        self, messages: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        """The prompt llama-server renders for a chat request (BOS text stripped from its
        start when the vocabulary adds BOS itself, as llama.cpp's common_chat does)."""
        body = {"messages": messages, "add_generation_prompt": add_generation_prompt}
        return str(self.post("/apply-template", body)["prompt"])

    def complete(self, request: dict[str, Any]) -> dict[str, Any]:
        """The /completion handler's verbose answer to `request` (a /completion body)."""
        return self.server.handle_completions({**request, "verbose": True})["__verbose"]

    def next_token_logprobs(
        self, context: list[int], n_probs: int, cache_prompt: bool = False
    ) -> list[tuple[int, float]]:
        """llama.cpp's n_probs most likely next tokens after `context`: (id, logprob), best
        first. With `cache_prompt`, the server keeps the KV cache of the longest prefix it
        shares with the previous request and evaluates only the rest; without, the whole
        context is evaluated in one batch."""
        request = {
            "prompt": context,
            "n_predict": 1,
            "n_probs": n_probs,
            "post_sampling_probs": False,
            "temperature": 0.0,
            "top_k": 1,
            "repeat_penalty": 1.0,
            "cache_prompt": cache_prompt,
            "logit_bias": [[self.forced_id, 100.0]],
            "return_tokens": True,
        }
        out = self.complete(request)
        if out["tokens"] != [self.forced_id] or out["tokens_evaluated"] != len(context):
            raise RuntimeError(
                f"unexpected llama.cpp answer: sampled {out['tokens']}, "
                f"evaluated {out['tokens_evaluated']} of {len(context)} tokens"
            )
        top = out["completion_probabilities"][0]["top_logprobs"]
        return [(int(c["id"]), float(c["logprob"])) for c in top]
