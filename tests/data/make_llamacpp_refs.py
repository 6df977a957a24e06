"""Regenerate tests/data/smollm2_greedy.json: llama.cpp's greedy reference chains for SmolLM2.

Run from the repository root (takes about a minute; fetches the model on first use):

    python tests/data/make_llamacpp_refs.py

llama.cpp runs in-process through xllamacpp (its embedded llama-server). Two sections:

- "q4_1": the SmolLM2-135M-Instruct Q4_1 GGUF as shipped, llama.cpp's default KV cache
  (f16) and flash attention ("auto", which resolves to enabled on CPU);
- "f32": an all-F32 dequantized copy of the same GGUF (written with gguf-py into the
  test cache, never into the repo), f32 KV cache, flash attention off: exact float math,
  the closest reference for a float32 runtime.

For every prompt it records the prompt token ids llama.cpp used (from the server's
/tokenize with the same add_special/parse_special as /completion; SmolLM2 has
add_bos_token = false, so no BOS is added), the greedy continuation (temperature 0,
top_k 1, at most 32 tokens, stops at EOS) and, for each generated step, llama.cpp's top-2
candidates with their log-probabilities: log-softmax of the raw logits before sampling
(n_probs, post_sampling_probs = false). Differences of logprobs equal differences of
logits, so "gap" (top-1 minus top-2 logprob) is the logit gap a comparison test needs.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import sys
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import xllamacpp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for assets.py
import assets

log = logging.getLogger("make_llamacpp_refs")

OUT = Path(__file__).with_name("smollm2_greedy.json")
COMMAND = "python tests/data/make_llamacpp_refs.py"
F32_NAME = "SmolLM2-135M-Instruct.F32.gguf"
N_PREDICT = 32
N_PROBS = 2
N_THREADS = 2
N_CTX = 512
NEAR_TIE = 0.5

# (name, raw prompt); the chat case is ChatML written out by hand, without a system turn.
PROMPTS: tuple[tuple[str, str], ...] = (
    ("capital", "The capital of France is"),
    ("chatml", "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"),
    ("code", "def fibonacci(n):"),
    ("chinese", "中国的首都是"),
)
# Rendered by llama.cpp's /apply-template with the GGUF's own chat template (which adds
# SmolLM2's default system prompt when the first message is not a system message).
TEMPLATE_CASES: tuple[tuple[str, list[dict[str, str]]], ...] = (
    ("chat_template", [{"role": "user", "content": "What is 2+2?"}]),
)

SAMPLING: dict[str, Any] = {
    "temperature": 0.0,
    "top_k": 1,
    "n_predict": N_PREDICT,
    "n_probs": N_PROBS,
    "post_sampling_probs": False,
    "repeat_penalty": 1.0,
    "cache_prompt": False,
    "return_tokens": True,
    "verbose": True,
}

GGML_TYPES = {"f16": xllamacpp.ggml_type.GGML_TYPE_F16, "f32": xllamacpp.ggml_type.GGML_TYPE_F32}
FLASH_ATTN = {
    "auto": xllamacpp.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_AUTO,
    "on": xllamacpp.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_ENABLED,
    "off": xllamacpp.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_DISABLED,
}


@dataclass(frozen=True)
class LlamaCppSettings:
    cache_type_k: str
    cache_type_v: str
    flash_attn: str
    n_threads: int = N_THREADS
    n_threads_batch: int = N_THREADS
    n_ctx: int = N_CTX
    n_parallel: int = 1


CONFIGS: dict[str, LlamaCppSettings] = {
    "q4_1": LlamaCppSettings(cache_type_k="f16", cache_type_v="f16", flash_attn="auto"),
    "f32": LlamaCppSettings(cache_type_k="f32", cache_type_v="f32", flash_attn="off"),
}


def write_f32_copy(src: Path, dest: Path) -> None:
    """Write ``dest``: ``src`` with every tensor dequantized to F32, same metadata
    (general.file_type set to ALL_F32), tensors in the same order."""
    reader = gguf.GGUFReader(src)
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    writer = gguf.GGUFWriter(dest, arch=arch, endianess=reader.endianess)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue  # written by GGUFWriter itself
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        value = field.contents()
        if field.name == gguf.Keys.General.FILE_TYPE:
            value = int(gguf.LlamaFileType.ALL_F32)
        writer.add_key_value(field.name, value, kind, sub_type=sub)
    for t in reader.tensors:
        shape = tuple(int(n) for n in reversed(t.shape))  # numpy order (rows, cols)
        writer.add_tensor_info(t.name, shape, np.dtype(np.float32), 4 * int(np.prod(shape)))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for t in reader.tensors:
        data = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
        writer.write_tensor_data(data.reshape(tuple(int(n) for n in reversed(t.shape))))
    writer.close()


def smollm2_f32_gguf() -> Path:
    """The all-F32 copy of the SmolLM2 GGUF, built once in the test cache."""
    src = assets.smollm2_gguf()
    target = src.with_name(F32_NAME)
    if target.is_file():
        return target
    with assets.cache_lock() as root:
        if not target.is_file():
            part = root / f"{assets.TMP_PREFIX}{F32_NAME}.{os.getpid()}"
            log.info("writing dequantized copy %s", target)
            write_f32_copy(src, part)
            os.replace(part, target)
    return target


def make_server(model: Path, cfg: LlamaCppSettings) -> xllamacpp.Server:
    params = xllamacpp.CommonParams()
    params.model.path = str(model)
    params.n_ctx = cfg.n_ctx
    params.n_parallel = cfg.n_parallel
    params.cpuparams.n_threads = cfg.n_threads
    params.cpuparams_batch.n_threads = cfg.n_threads_batch
    params.cache_type_k = GGML_TYPES[cfg.cache_type_k]
    params.cache_type_v = GGML_TYPES[cfg.cache_type_v]
    params.flash_attn_type = FLASH_ATTN[cfg.flash_attn]
    return xllamacpp.Server(params)


def post(server: xllamacpp.Server, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST to the embedded llama-server's loopback HTTP endpoint."""
    request = urllib.request.Request(
        server.listening_address + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def tokenize(server: xllamacpp.Server, text: str) -> list[int]:
    # /completion tokenizes with add_special=true, parse_special=true; mirror that.
    body = {"content": text, "add_special": True, "parse_special": True}
    return [int(t) for t in post(server, "/tokenize", body)["tokens"]]


def gpt2_byte_decoder() -> dict[str, int]:
    """GPT-2 byte-level BPE: the printable character that stands for each byte, inverted."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    keep += range(ord("®"), ord("ÿ") + 1)
    moved = [b for b in range(256) if b not in keep]
    pairs = [(chr(b), b) for b in keep] + [(chr(256 + n), b) for n, b in enumerate(moved)]
    return dict(pairs)


def token_bytes(model: Path) -> list[bytes]:
    """The bytes llama.cpp's server prints for each token id (control tokens print as "")."""
    fields = gguf.GGUFReader(model).fields
    if fields["tokenizer.ggml.model"].contents() != "gpt2":
        raise RuntimeError(f"{model.name}: expected a gpt2 (byte-level BPE) vocabulary")
    decoder = gpt2_byte_decoder()
    tokens = fields["tokenizer.ggml.tokens"].contents()
    kinds = fields["tokenizer.ggml.token_type"].contents()
    control = int(gguf.TokenType.CONTROL)
    return [
        b"" if k == control else bytes(decoder[c] for c in t)
        for t, k in zip(tokens, kinds, strict=True)
    ]


UTF8_LEADS = ((0xE0, 0xC0, 2), (0xF0, 0xE0, 3), (0xF8, 0xF0, 4))  # (mask, lead bits, length)


def utf8_complete(text: bytes) -> bool:
    """llama.cpp server's validate_utf8(text) == len(text): no cut-off character at the end."""
    for back in range(1, min(4, len(text)) + 1):
        lead = text[-back]
        need = (
            2
            if lead & 0xE0 == 0xC0
            else 3
            if lead & 0xF0 == 0xE0
            else 4
            if lead & 0xF8 == 0xF0
            else 0
        )
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


def step_record(token: int, entry: dict[str, Any], source: str) -> dict[str, Any]:
    top = [[int(c["id"]), float(c["logprob"])] for c in entry["top_logprobs"]]
    if top[0][0] != token:
        raise RuntimeError(f"greedy token {token} is not llama.cpp's top-1 {top[0]}")
    return {"id": token, "top": top, "gap": top[0][1] - top[1][1], "source": source}


@dataclass(frozen=True)
class Reference:
    """One llama.cpp server plus what is needed to read its answers."""

    server: xllamacpp.Server
    pieces: list[bytes]
    force_id: int  # a one-byte token forced by logit_bias for teacher-forced steps

    def complete(self, prompt: str | list[int], **overrides: Any) -> dict[str, Any]:
        return self.server.handle_completions({"prompt": prompt, **SAMPLING, **overrides})[
            "__verbose"
        ]

    def teacher_forced(self, context: list[int]) -> dict[str, Any]:
        """Probabilities of the next token after ``context`` (raw logits; logit_bias only
        steers the sampled token to a complete character so the server reports them)."""
        out = self.complete(context, n_predict=1, logit_bias=[[self.force_id, 100.0]])
        if out["tokens"] != [self.force_id]:
            raise RuntimeError(f"teacher-forced step sampled {out['tokens']}")
        return out["completion_probabilities"][0]


def run_case(ref: Reference, name: str, prompt: str) -> dict[str, Any]:
    prompt_ids = tokenize(ref.server, prompt)
    out = ref.complete(prompt)
    if out["tokens_evaluated"] != len(prompt_ids) or out["prompt"] != prompt:
        raise RuntimeError(f"{name}: /tokenize disagrees with the prompt /completion evaluated")
    ids = [int(t) for t in out["tokens"]]
    chain = align_chain(ids, ref.pieces, out.get("completion_probabilities", []))
    steps = [
        step_record(tok, chain[i], "chain")
        if i in chain
        else step_record(tok, ref.teacher_forced(prompt_ids + ids[:i]), "teacher_forced")
        for i, tok in enumerate(ids)
    ]
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


def run_config(model: Path, cfg: LlamaCppSettings, pieces: list[bytes]) -> dict[str, Any]:
    server = make_server(model, cfg)
    props = json.loads(urllib.request.urlopen(server.listening_address + "/props").read())
    (force_id,) = tokenize(server, ".")
    ref = Reference(server, pieces, force_id)
    cases = [run_case(ref, name, prompt) for name, prompt in PROMPTS]
    for name, messages in TEMPLATE_CASES:
        rendered = post(server, "/apply-template", {"messages": messages})["prompt"]
        case = run_case(ref, name, rendered)
        cases.append({"messages": messages, **case})
    return {
        "model": {"file": model.name, "ftype": props.get("model_ftype")},
        "llama_cpp": asdict(cfg),
        "cases": cases,
    }


def dumps(obj: Any, level: int = 0) -> str:
    """JSON with one line per step record and per list of scalars, indented otherwise."""
    flat = isinstance(obj, dict) and "gap" in obj
    flat |= isinstance(obj, list) and all(not isinstance(v, dict | list) for v in obj)
    if flat or not isinstance(obj, dict | list) or not obj:
        return json.dumps(obj, ensure_ascii=False)
    pad, inner = " " * level, " " * (level + 1)
    if isinstance(obj, list):
        items = [inner + dumps(v, level + 1) for v in obj]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    items = [f"{inner}{json.dumps(k)}: {dumps(v, level + 1)}" for k, v in obj.items()]
    return "{\n" + ",\n".join(items) + "\n" + pad + "}"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    models = {"q4_1": assets.smollm2_gguf(), "f32": smollm2_f32_gguf()}
    pieces = token_bytes(models["q4_1"])
    sections = {key: run_config(models[key], cfg, pieces) for key, cfg in CONFIGS.items()}
    versions = xllamacpp._version.get_versions()
    doc = {
        "command": COMMAND,
        "generator": {
            "xllamacpp": xllamacpp.__version__,
            "xllamacpp_revision": versions["full-revisionid"],
            "build_info": xllamacpp.BUILD_INFO,
            "gguf_py": importlib.metadata.version("gguf"),  # wrote the F32 copy
        },
        "source_model": {
            "requirement": assets.SMOLLM2_REQUIREMENT,
            "member": assets.SMOLLM2_MEMBER,
            "sha256": assets.SMOLLM2_SHA256,
            "f32_copy_sha256": sha256(models["f32"]),
        },
        "scores": "logprob: log-softmax of raw logits before sampling; gap = top1 - top2",
        "near_tie": NEAR_TIE,
        "sampling": {k: v for k, v in SAMPLING.items() if k not in ("verbose", "return_tokens")},
        **sections,
    }
    OUT.write_text(dumps(doc) + "\n", encoding="utf-8")
    log.info("wrote %s", OUT)


if __name__ == "__main__":
    main()
