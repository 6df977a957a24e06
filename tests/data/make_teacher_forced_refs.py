"""Regenerate tests/data/teacher_forced.json: llama.cpp's teacher-forced next-token
predictions over the first 256 tokens of the GPL-3 text, for each real test model.

Run from the repository root (10-20 minutes on 2 cores; fetches the models on first use):

    python tests/data/make_teacher_forced_refs.py                    # everything
    python tests/data/make_teacher_forced_refs.py gemma3             # some models; others kept
    python tests/data/make_teacher_forced_refs.py --kind exact       # one kind of reference

llama.cpp runs in-process through xllamacpp (its embedded llama-server) with its default
settings (f16 KV cache, flash attention auto) and 2 threads; tests/llamacpp_ref.py drives
it. The text is /usr/share/common-licenses/GPL-3 (Debian base-files), tokenized by
llama.cpp's /tokenize with add_special (so gemma3 starts with BOS; SmolLM2 and Qwen add
none) and cut to its first 256 tokens. For every prefix ids[:i+1], i = 0..255, in order,
llama.cpp's two most likely next tokens are recorded as [id1, logprob1, id2, logprob2]:
log-softmax of the raw logits, so logprob1 - logprob2 is the logit gap between top-1 and
top-2. Every prefix is evaluated from scratch in one batch (no prompt cache), as a
runtime scores a text (llama-perplexity, corral's batched prefill). That costs O(n^2)
tokens; with the prompt cache (one decoded token per prefix on top of the KV cache) it
would be fast, but llama.cpp's batched and single-token paths run different kernels
and disagree with each other on about 4% of positions (gemma3: 10 of 256), near-ties.

Each model also gets an "exact" reference: llama.cpp on an all-F32 dequantized copy of
the same GGUF (written with gguf-py into the test cache, never into the repo), f32 KV
cache, flash attention off: float math, the closest reference for a float32 runtime.
There the prompt cache is used (each prefix adds one token on the cached KV of the
previous one), since float math makes the batched and single-token paths agree.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import xllamacpp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/
import assets
from llamacpp_ref import EXACT, LlamaCpp, Settings
from refs_common import MODELS, dumps, f32_copy, generator_versions, sha256

log = logging.getLogger("make_teacher_forced_refs")

OUT = Path(__file__).with_name("teacher_forced.json")
COMMAND = "python tests/data/make_teacher_forced_refs.py"
N_TOKENS = 256
DECIMALS = 5


def predictions(ref: LlamaCpp, ids: list[int], cache_prompt: bool) -> list[list[float]]:
    """[id1, logprob1, id2, logprob2] after each prefix ids[:i+1]."""
    top2 = []
    for i in range(len(ids)):
        (a, lp_a), (b, lp_b) = ref.next_token_logprobs(ids[: i + 1], 2, cache_prompt)
        top2.append([a, round(lp_a, DECIMALS), b, round(lp_b, DECIMALS)])
    return top2


def default_section(name: str, text: str) -> dict[str, Any]:
    path, started = MODELS[name].fetch(), time.monotonic()
    ref = LlamaCpp(path, Settings())
    ids = ref.tokenize(text)[:N_TOKENS]
    top2 = predictions(ref, ids, cache_prompt=False)
    log.info("%s: %d positions in %.0fs", name, len(ids), time.monotonic() - started)
    return {
        "model": {
            "file": path.name,
            "requirement": MODELS[name].requirement,
            "sha256": sha256(path),
        },
        "llama_cpp": Settings().as_dict(),
        "ids": ids,
        "top2": top2,
    }


def exact_section(name: str, ids: list[int]) -> dict[str, Any]:
    copy = f32_copy(name)
    started, ref = time.monotonic(), LlamaCpp(copy, EXACT)
    top2 = predictions(ref, ids, cache_prompt=True)
    log.info("%s (F32 copy): %d positions in %.0fs", name, len(ids), time.monotonic() - started)
    return {
        "model": {"file": copy.name, "sha256": sha256(copy)},
        "llama_cpp": {**EXACT.as_dict(), "prompt_cache": True},
        "top2": top2,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="*", help=f"some of {', '.join(MODELS)} (default: all)")
    parser.add_argument("--kind", choices=["default", "exact"], help="only this reference")
    args = parser.parse_args()
    if unknown := [n for n in args.models if n not in MODELS]:
        parser.error(f"unknown model(s) {unknown}; known: {', '.join(MODELS)}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    text_bytes = assets.GPL3_PATH.read_bytes()
    old = json.loads(OUT.read_text()) if OUT.is_file() else {"models": {}}
    sections = dict(old["models"])
    for name in args.models or list(MODELS):
        if args.kind != "exact":
            exact = sections.get(name, {}).get("exact")
            sections[name] = default_section(name, text_bytes.decode("utf-8"))
            if exact is not None:
                sections[name]["exact"] = exact
        if args.kind != "default":
            sections[name]["exact"] = exact_section(name, sections[name]["ids"])
    doc = {
        "command": COMMAND,
        "generator": generator_versions(),
        "text": {"path": str(assets.GPL3_PATH), "sha256": hashlib.sha256(text_bytes).hexdigest()},
        "n_tokens": N_TOKENS,
        "top2": "per position i: llama.cpp's next-token [id1, logprob1, id2, logprob2] after "
        "ids[:i+1] (log-softmax of raw logits); 'exact': the same on an all-F32 copy",
        "models": {name: sections[name] for name in MODELS if name in sections},
    }
    OUT.write_text(dumps(doc) + "\n", encoding="utf-8")
    log.info("wrote %s", OUT)


if __name__ == "__main__":
    main()
