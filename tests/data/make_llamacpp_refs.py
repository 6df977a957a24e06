"""Regenerate tests/data/<model>_greedy.json: llama.cpp's greedy reference chains.

Run from the repository root (a few minutes on 2 cores; fetches the models on first use):

    python tests/data/make_llamacpp_refs.py                  # smollm2, qwen25_coder, gemma3
    python tests/data/make_llamacpp_refs.py qwen25_coder     # some models; others kept

llama.cpp runs in-process through xllamacpp (its embedded llama-server, driven by
tests/llamacpp_ref.py) with 2 threads. Two sections per model:

- "default": the GGUF as shipped, llama.cpp's default KV cache (f16) and flash attention
  ("auto", which resolves to enabled on CPU);
- "exact": an all-F32 dequantized copy of the same GGUF (written with gguf-py into the
  test cache, never into the repo), f32 KV cache, flash attention off: exact float math,
  the closest reference for a float32 runtime.

Prompts: English, code and Chinese text, a chat turn written out in the model's format,
and chat turns rendered by llama.cpp's /apply-template (its own Jinja engine) with the
model's chat template: a single user turn and a system prompt with a multi-turn history.
gemma-3-270m (the base model) ships no template; its chat turns use Gemma 3's
instruction template (tests/data/chat_templates/google-gemma-3-it.jinja), given to
llama.cpp as --chat-template.

For every prompt it records the prompt token ids llama.cpp used (from the server's
/tokenize with the same add_special/parse_special as /completion), the greedy
continuation (temperature 0, top_k 1, at most 32 tokens, stops at EOS) and, for each
generated step, llama.cpp's top-2 candidates with their log-probabilities: log-softmax of
the raw logits before sampling (n_probs, post_sampling_probs = false). Differences of
logprobs equal differences of logits, so "gap" (top-1 minus top-2 logprob) is the logit
gap a comparison test needs. The server reports probabilities only for tokens that
complete a UTF-8 character; the other steps ("source": "teacher_forced") are scored by
evaluating the prompt plus the chain so far.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xllamacpp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/
from llamacpp_ref import EXACT, LlamaCpp, Settings
from refs_common import MODELS, dumps, f32_copy, generator_versions, sha256, token_bytes

log = logging.getLogger("make_llamacpp_refs")

DATA = Path(__file__).parent
COMMAND = "python tests/data/make_llamacpp_refs.py"
GEMMA3_TEMPLATE = DATA / "chat_templates" / "google-gemma-3-it.jinja"
N_PREDICT = 32
N_PROBS = 2
NEAR_TIE = 0.5

# (name, raw prompt), for every model.
PROMPTS: tuple[tuple[str, str], ...] = (
    ("capital", "The capital of France is"),
    ("code", "def fibonacci(n):"),
    ("chinese", "中国的首都是"),
)
# A chat turn written out by hand in the model's own format (no system turn).
CHATML_TURN = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
RAW_CHAT: dict[str, str] = {
    "smollm2": CHATML_TURN,
    "qwen25_coder": CHATML_TURN,
    "gemma3": "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n",
}
# Rendered by llama.cpp's /apply-template with the model's chat template (SmolLM2's and
# Qwen's add a default system prompt when the first message is not a system message).
TEMPLATE_CASES: tuple[tuple[str, list[dict[str, str]]], ...] = (
    ("chat_template", [{"role": "user", "content": "What is 2+2?"}]),
    (
        "chat_history",
        [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "The capital of France is Paris."},
            {"role": "user", "content": "And the capital of Italy?"},
        ],
    ),
)
# Models whose GGUF has no chat template: the template llama.cpp is given instead.
TEMPLATE_OVERRIDES: dict[str, Path] = {"gemma3": GEMMA3_TEMPLATE}

SAMPLING: dict[str, Any] = {
    "temperature": 0.0,
    "top_k": 1,
    "n_predict": N_PREDICT,
    "n_probs": N_PROBS,
    "post_sampling_probs": False,
    "repeat_penalty": 1.0,
    "cache_prompt": False,
    "return_tokens": True,
}
SECTIONS: dict[str, Settings] = {"default": Settings(), "exact": EXACT}


UTF8_LEADS = ((0xE0, 0xC0, 2), (0xF0, 0xE0, 3), (0xF8, 0xF0, 4))  # (mask, lead bits, length)


def utf8_complete(text: bytes) -> bool:
    """llama.cpp server's validate_utf8(text) == len(text): no cut-off character at the end."""
    for back in range(1, min(4, len(text)) + 1):
        lead = text[-back]
        need = next((n for mask, bits, n in UTF8_LEADS if lead & mask == bits), 0)
        if back < need:
            return False
    return True


def align_chain(ids: list[int], pieces: list[bytes], entries: list[dict]) -> dict[int, dict]:
    """Step index -> llama.cpp's probability entry. The server reports probabilities only for
    a token that completes a UTF-8 character (with the bytes of the whole run); tokens inside
    a multi-token character get none."""
    found: dict[int, dict] = {}
    pending = iter(entries)
    text, run = b"", b""
    for step, tok in enumerate(ids):
        text, run = text + pieces[tok], run + pieces[tok]
        if not utf8_complete(text):
            continue
        entry = next(pending, None)
        if entry is None or entry["id"] != tok or bytes(entry["bytes"]) != run:
            raise RuntimeError(f"step {step}: cannot align llama.cpp's probabilities")
        found[step], run = entry, b""
    if next(pending, None) is not None:
        raise RuntimeError("llama.cpp reported more probability entries than aligned steps")
    return found


def step_record(token: int, top: list[tuple[int, float]], source: str) -> dict[str, Any]:
    if top[0][0] != token:
        raise RuntimeError(f"greedy token {token} is not llama.cpp's top-1 {top[0]}")
    pairs = [[int(i), float(lp)] for i, lp in top]
    return {"id": token, "top": pairs, "gap": pairs[0][1] - pairs[1][1], "source": source}


@dataclass(frozen=True)
class Reference:
    """One llama.cpp server plus what is needed to read its answers."""

    llama: LlamaCpp
    pieces: list[bytes]

    def case(self, name: str, prompt: str) -> dict[str, Any]:
        prompt_ids = self.llama.tokenize(prompt)
        out = self.llama.complete({"prompt": prompt, **SAMPLING})
        # the server echoes the evaluated tokens as text: BOS included, where one was added
        if out["tokens_evaluated"] != len(prompt_ids) or not out["prompt"].endswith(prompt):
            raise RuntimeError(f"{name}: /tokenize disagrees with the prompt /completion used")
        ids = [int(t) for t in out["tokens"]]
        chain = align_chain(ids, self.pieces, out.get("completion_probabilities", []))
        steps = []
        for i, tok in enumerate(ids):
            if i in chain:
                top = [(c["id"], c["logprob"]) for c in chain[i]["top_logprobs"]]
                steps.append(step_record(tok, top, "chain"))
            else:
                top = self.llama.next_token_logprobs(prompt_ids + ids[:i], N_PROBS)
                steps.append(step_record(tok, top, "teacher_forced"))
        near = [i for i, s in enumerate(steps) if s["gap"] < NEAR_TIE]
        return {
            "name": name,
            "prompt": prompt,
            "prompt_ids": prompt_ids,
            "generated_ids": ids,
            "text": out["content"],
            "stop_type": out["stop_type"],
            "first_near_tie": near[0] if near else None,
            "steps": steps,
        }


def run_section(name: str, model: Path, settings: Settings, pieces: list[bytes]) -> dict:
    template = TEMPLATE_OVERRIDES.get(name)
    llama = LlamaCpp(model, settings, template.read_text() if template else None)
    ref = Reference(llama, pieces)
    cases = [ref.case(n, p) for n, p in (*PROMPTS, ("raw_chat", RAW_CHAT[name]))]
    for case_name, messages in TEMPLATE_CASES:
        case = ref.case(case_name, llama.apply_template(messages))
        cases.append({"messages": messages, **case})
    log.info("%s %s: %d cases", name, model.name, len(cases))
    return {
        "model": {"file": model.name, "ftype": llama.props().get("model_ftype")},
        "llama_cpp": settings.as_dict(),
        "cases": cases,
    }


def model_doc(name: str) -> dict[str, Any]:
    shipped, copy = MODELS[name].fetch(), f32_copy(name)
    pieces = token_bytes(shipped)
    sections = {
        "default": run_section(name, shipped, SECTIONS["default"], pieces),
        "exact": run_section(name, copy, SECTIONS["exact"], pieces),
    }
    template = TEMPLATE_OVERRIDES.get(name)
    return {
        "command": f"{COMMAND} {name}",
        "generator": generator_versions(),  # gguf-py wrote the F32 copy
        "source_model": {
            "requirement": MODELS[name].requirement,
            "file": shipped.name,
            "sha256": sha256(shipped),
            "f32_copy_sha256": sha256(copy),
        },
        "chat_template": str(template.relative_to(DATA.parents[1])) if template else "gguf",
        "scores": "logprob: log-softmax of raw logits before sampling; gap = top1 - top2",
        "near_tie": NEAR_TIE,
        "sampling": {k: v for k, v in SAMPLING.items() if k != "return_tokens"},
        **sections,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="*", help=f"some of {', '.join(MODELS)} (default: all)")
    args = parser.parse_args()
    if unknown := [n for n in args.models if n not in MODELS]:
        parser.error(f"unknown model(s) {unknown}; known: {', '.join(MODELS)}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in args.models or list(MODELS):
        out = DATA / f"{name}_greedy.json"
        out.write_text(dumps(model_doc(name)) + "\n", encoding="utf-8")
        log.info("wrote %s", out)


if __name__ == "__main__":
    main()
