"""Hugging Face checkpoints derived from real (or tiny) GGUF files, for conversion tests.

No registry ships a safetensors checkpoint of a causal LM, so one is made from a GGUF
(see ASSETS.md): every tensor is dequantized (corral.runtime.gguf.GGUFFile.load_tensor),
llama.cpp's Q/K row permutation of llama attention is undone (the inverse of
convert_hf_to_gguf.py's LlamaModel.permute), Gemma's norm weights get their 1 taken
back, tensors get their transformers names (this module's own table, written from
transformers' module names, not from corral's converter), and the folder gets what a
hub repository holds: `model.safetensors` (or shards + `model.safetensors.index.json`),
`config.json`, `generation_config.json`, `tokenizer.json` (byte-level BPE with the GGUF's
vocabulary and merges, the pre-tokenizer transformers uses for that family, special
added tokens), `tokenizer_config.json` (chat template, special tokens) and
`special_tokens_map.json`.

`smollm2_checkpoint()` builds SmolLM2-135M-Instruct once into the test cache (BF16 as
upstream, never committed); `derive_checkpoint()` does any GGUF into any folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

import assets
from corral.runtime.gguf import GGUFFile

SMOLLM2_REPO = "HuggingFaceTB/SmolLM2-135M-Instruct"
HF_CLASS = {
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "gemma3": "Gemma3ForCausalLM",
}
# GGUF block tensor -> transformers module under model.layers.N (llama family)
_BLOCK = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_GEMMA3_BLOCK = _BLOCK | {
    "ffn_norm": "pre_feedforward_layernorm",
    "post_attention_norm": "post_attention_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}
_TOP = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
# tokenizer.ggml.pre -> the pre_tokenizer transformers' tokenizer.json has for that family
_CONTRACTIONS = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"
_QWEN2_SPLIT = (
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_LLAMA3_SPLIT = (
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True}
_DIGITS_THEN_BYTES = {
    "type": "Sequence",
    "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        _BYTE_LEVEL | {"use_regex": True},
    ],
}


def _split_then_bytes(regex: str) -> dict[str, Any]:
    split = {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}
    return {"type": "Sequence", "pretokenizers": [split, _BYTE_LEVEL | {"use_regex": False}]}


PRE_TOKENIZERS: dict[str, dict[str, Any]] = {
    "gpt-2": _BYTE_LEVEL | {"use_regex": True},
    "smollm": _DIGITS_THEN_BYTES,
    "starcoder": _DIGITS_THEN_BYTES,
    "qwen2": _split_then_bytes(_QWEN2_SPLIT),
    "llama-bpe": _split_then_bytes(_LLAMA3_SPLIT),
}


def hf_name(arch: str, gguf_name: str) -> str:
    m = re.fullmatch(r"blk\.(\d+)\.(\w+)\.(weight|bias)", gguf_name)
    if m:
        table = _GEMMA3_BLOCK if arch == "gemma3" else _BLOCK
        return f"model.layers.{m[1]}.{table[m[2]]}.{m[3]}"
    stem, _, kind = gguf_name.rpartition(".")
    return f"{_TOP[stem]}.{kind}"


def unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of LlamaModel.permute: rows [x0, y0, x1, y1, ...] -> [x0, x1, ..., y0, y1, ...]."""
    # (n_head, D/2, 2, ...) -> (n_head, 2, D/2, ...)
    return (
        w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def _hf_values(arch: str, name: str, values: np.ndarray, md: dict[str, Any]) -> np.ndarray:
    """Undo what llama.cpp's converter did to this tensor."""
    if arch == "llama" and re.search(r"\.attn_(q|k)\.", name):
        heads = md[f"{arch}.attention.head_count"]
        if ".attn_k." in name:
            heads = md.get(f"{arch}.attention.head_count_kv", heads)
        return unpermute(values, int(heads))
    if arch == "gemma3" and name.endswith("norm.weight"):
        return values - np.float32(1.0)
    return values


# --- safetensors, written by hand (8-byte header length, JSON header, raw data) -----------


def _bf16_bits(values: np.ndarray) -> np.ndarray:
    bits = values.astype(np.float32).view(np.uint32).astype(np.uint64)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


ENCODERS: dict[str, tuple[int, Callable[[np.ndarray], np.ndarray]]] = {
    "F32": (4, lambda v: v.astype("<f4")),
    "F16": (2, lambda v: v.astype("<f2")),
    "BF16": (2, _bf16_bits),
}


def write_safetensors(
    path: Path,
    tensors: list[tuple[str, tuple[int, ...]]],
    produce: Callable[[str], np.ndarray],
    dtype: str,
) -> int:
    """Write `tensors` (name, shape) in order, each produced (float32) only when written."""
    itemsize, encode = ENCODERS[dtype]
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in tensors:
        n = int(np.prod(shape, dtype=np.int64)) * itemsize
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw)
        for name, shape in tensors:
            data = encode(produce(name))
            assert data.shape == tuple(shape), (name, data.shape, shape)
            f.write(data.tobytes())
    return offset


# --- config and tokenizer files ----------------------------------------------------------


def _config(arch: str, md: dict[str, Any], tensors: Iterable[str], dtype: str) -> dict[str, Any]:
    a = arch
    n_embd, n_head = int(md[f"{a}.embedding_length"]), int(md[f"{a}.attention.head_count"])
    config: dict[str, Any] = {
        "architectures": [HF_CLASS[arch]],
        "model_type": arch,
        "hidden_size": n_embd,
        "intermediate_size": int(md[f"{a}.feed_forward_length"]),
        "num_hidden_layers": int(md[f"{a}.block_count"]),
        "num_attention_heads": n_head,
        "num_key_value_heads": int(md.get(f"{a}.attention.head_count_kv", n_head)),
        "head_dim": int(md.get(f"{a}.attention.key_length", n_embd // n_head)),
        "max_position_embeddings": int(md[f"{a}.context_length"]),
        "rms_norm_eps": float(md[f"{a}.attention.layer_norm_rms_epsilon"]),
        "rope_theta": float(md.get(f"{a}.rope.freq_base", 10000.0)),
        "vocab_size": len(md["tokenizer.ggml.tokens"]),
        "tie_word_embeddings": "output.weight" not in tensors,
        "hidden_act": "gelu_pytorch_tanh" if arch == "gemma3" else "silu",
        "torch_dtype": {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}[dtype],
        "transformers_version": "4.42.3",
        "use_cache": True,
    }
    for role, key in (("bos", "bos"), ("eos", "eos"), ("pad", "padding")):
        if f"tokenizer.ggml.{key}_token_id" in md:
            config[f"{role}_token_id"] = int(md[f"tokenizer.ggml.{key}_token_id"])
    if f"{a}.rope.scaling.type" in md:
        config["rope_scaling"] = {
            "rope_type": str(md[f"{a}.rope.scaling.type"]),
            "factor": float(md[f"{a}.rope.scaling.factor"]),
        }
    if arch == "gemma3":
        config |= {"sliding_window": int(md.get(f"{a}.attention.sliding_window", 512))}
        config |= {"sliding_window_pattern": 6, "rope_local_base_freq": 10000.0}
        config["query_pre_attn_scalar"] = config["head_dim"]
    return config


def tokenizer_files(md: dict[str, Any]) -> dict[str, dict[str, Any]]:
    tokens = list(md["tokenizer.ggml.tokens"])
    types = [int(t) for t in md["tokenizer.ggml.token_type"]]
    added = [
        {
            "id": i,
            "content": t,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": types[i] != 3,
            "special": types[i] == 3,
        }
        for i, t in enumerate(tokens)
        if types[i] in (3, 4)
    ]
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": PRE_TOKENIZERS[str(md["tokenizer.ggml.pre"])],
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": {t: i for i, t in enumerate(tokens)},
            "merges": list(md["tokenizer.ggml.merges"]),
        },
    }
    role = {
        r: tokens[int(md[f"tokenizer.ggml.{k}_token_id"])]
        for r, k in (("bos", "bos"), ("eos", "eos"), ("unk", "unknown"), ("pad", "padding"))
        if f"tokenizer.ggml.{k}_token_id" in md
    }
    tok_config: dict[str, Any] = {
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(a["id"]): {k: v for k, v in a.items() if k != "id"} for a in added
        },
        "additional_special_tokens": [t for t in (role.get("bos"), role.get("eos")) if t],
        "clean_up_tokenization_spaces": False,
        "model_max_length": 8192,
        "tokenizer_class": "GPT2Tokenizer",
        "vocab_size": len(tokens),
    } | {f"{r}_token": t for r, t in role.items()}
    for flag in ("add_bos_token", "add_eos_token"):
        if f"tokenizer.ggml.{flag}" in md:
            tok_config[flag] = bool(md[f"tokenizer.ggml.{flag}"])
    if "tokenizer.chat_template" in md:
        tok_config["chat_template"] = str(md["tokenizer.chat_template"])
    special_map = {f"{r}_token": t for r, t in role.items()}
    special_map["additional_special_tokens"] = tok_config["additional_special_tokens"]
    return {
        "tokenizer.json": tokenizer,
        "tokenizer_config.json": tok_config,
        "special_tokens_map.json": special_map,
    }


def derive_checkpoint(
    gguf_path: Path, out: Path, *, dtype: str = "BF16", shards: int = 1, tokenizer: bool = True
) -> Path:
    """Write the HF checkpoint of `gguf_path` into the folder `out` (created)."""
    out.mkdir(parents=True, exist_ok=True)
    with GGUFFile.open(gguf_path) as g:
        md = {k: g.metadata[k] for k in g.metadata}
        arch = str(md["general.architecture"])
        infos = list(g.tensors.values())
        names = {hf_name(arch, t.name): t.name for t in infos}
        listed = [(hf_name(arch, t.name), t.shape) for t in infos]

        def produce(hf: str) -> np.ndarray:
            return _hf_values(arch, names[hf], g.load_tensor(names[hf]), md)

        groups = np.array_split(np.arange(len(listed)), shards)
        weight_map, total = {}, 0
        for k, group in enumerate(groups):
            part = [listed[i] for i in group]
            fname = (
                "model.safetensors"
                if shards == 1
                else (f"model-{k + 1:05d}-of-{shards:05d}.safetensors")
            )
            total += write_safetensors(out / fname, part, produce, dtype)
            weight_map |= {name: fname for name, _ in part}
    if shards > 1:
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        _json(out / "model.safetensors.index.json", index)
    config = _config(arch, md, (t.name for t in infos), dtype)
    _json(out / "config.json", config)
    generation = {
        k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in config
    }
    _json(out / "generation_config.json", {"_from_model_config": True, **generation})
    if "general.license" in md:
        card = (
            f"---\nlicense: {md['general.license']}\nlibrary_name: transformers\n---\n\n# Model\n"
        )
        (out / "README.md").write_text(card, encoding="utf-8")
    if tokenizer:
        for fname, data in tokenizer_files(md).items():
            _json(out / fname, data)
    return out


def _json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def smollm2_checkpoint(shards: int = 1) -> Path:
    """SmolLM2-135M-Instruct as a BF16 HF checkpoint folder in the test cache (built once)."""
    target = assets.cache_dir() / f"hf-SmolLM2-135M-Instruct-{shards}shard"
    if (target / "config.json").is_file():
        return target
    src = assets.smollm2_gguf()
    with assets.cache_lock() as root:
        if not (target / "config.json").is_file():
            part = root / f"{assets.TMP_PREFIX}{target.name}.{os.getpid()}"
            derive_checkpoint(src, part, dtype="BF16", shards=shards)
            shutil.rmtree(target, ignore_errors=True)
            os.replace(part, target)
    return target
