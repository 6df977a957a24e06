"""HF -> GGUF conversion tables, one per architecture, after llama.cpp's convert_hf_to_gguf.py.

Each `Architecture` says, for one `architectures[0]` of config.json:
- `tensors`: HF tensor name -> GGUF tensor name (`{bid}` is the layer number);
- `transforms`: GGUF tensor name -> what llama.cpp does to its data on the way:
  * `permute_q` / `permute_k` (LlamaModel.permute): llama.cpp's `llama` graph applies
    RoPE to adjacent pairs, HF's to the two halves of each head, so the rows of every
    Q (and K) head are reordered from [x0..x_{d/2-1}, y0..] to [x0, y0, x1, y1, ...];
    Qwen2/Qwen3/Gemma3 use NeoX RoPE in llama.cpp and are not permuted;
  * `plus_one` (Gemma3Model.norm_shift): Gemma's RMSNorm multiplies by (1 + w), llama.cpp
    by w, so every `*norm.weight` gets 1 added;
  * `vocab_rows` (Gemma3Model.modify_tensors): the embedding keeps only the rows of the
    tokenizer's real vocabulary;
- `hparams`: GGUF key (after `<arch>.`) -> how to read it from config.json;
- `skip`: HF tensors llama.cpp drops (`rotary_emb.inv_freq`).
A tensor found in a checkpoint that no table entry maps is an error, as in llama.cpp.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Config = Mapping[str, Any]


@dataclass(frozen=True)
class HParam:
    """One GGUF key: the config keys tried in order, a default, or a function of the config."""

    hf: tuple[str, ...] = ()
    kind: type = int
    default: Any = None  # None: the key is left out when the config lacks it
    derive: Callable[[Config], Any] | None = None

    def value(self, config: Config) -> Any:
        if self.derive is not None:
            found = self.derive(config)
        else:
            found = next((config[k] for k in self.hf if config.get(k) is not None), self.default)
        return None if found is None else self.kind(found)


def _head_dim(c: Config) -> int:
    return int(c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"])


def _softcap(c: Config) -> float | None:
    return c.get("final_logit_softcapping") or None


def _gemma_sliding_window(c: Config) -> int | None:
    return None if c.get("sliding_window_pattern") == 1 else c.get("sliding_window")


_COMMON: dict[str, HParam] = {
    "context_length": HParam(("max_position_embeddings", "n_ctx", "n_positions")),
    "embedding_length": HParam(("hidden_size", "n_embd")),
    "feed_forward_length": HParam(("intermediate_size", "n_inner")),
    "block_count": HParam(("num_hidden_layers", "n_layer")),
    "attention.head_count": HParam(("num_attention_heads", "n_head")),
    "attention.head_count_kv": HParam(("num_key_value_heads", "n_head_kv")),
    "rope.freq_base": HParam(("rope_theta",), float),
    "attention.layer_norm_rms_epsilon": HParam(("rms_norm_eps",), float),
    "attention.key_length": HParam(("head_dim",)),
    "attention.value_length": HParam(("head_dim",)),
}

_LLAMA_TENSORS: dict[str, str] = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
    "model.layers.{bid}.input_layernorm.weight": "blk.{bid}.attn_norm.weight",
    "model.layers.{bid}.post_attention_layernorm.weight": "blk.{bid}.ffn_norm.weight",
    "model.layers.{bid}.self_attn.q_proj.weight": "blk.{bid}.attn_q.weight",
    "model.layers.{bid}.self_attn.k_proj.weight": "blk.{bid}.attn_k.weight",
    "model.layers.{bid}.self_attn.v_proj.weight": "blk.{bid}.attn_v.weight",
    "model.layers.{bid}.self_attn.o_proj.weight": "blk.{bid}.attn_output.weight",
    "model.layers.{bid}.mlp.gate_proj.weight": "blk.{bid}.ffn_gate.weight",
    "model.layers.{bid}.mlp.up_proj.weight": "blk.{bid}.ffn_up.weight",
    "model.layers.{bid}.mlp.down_proj.weight": "blk.{bid}.ffn_down.weight",
}
_QKV_BIASES: dict[str, str] = {
    f"model.layers.{{bid}}.self_attn.{p}_proj.bias": f"blk.{{bid}}.attn_{p}.bias"
    for p in ("q", "k", "v")
}
_QK_NORMS: dict[str, str] = {
    "model.layers.{bid}.self_attn.q_norm.weight": "blk.{bid}.attn_q_norm.weight",
    "model.layers.{bid}.self_attn.k_norm.weight": "blk.{bid}.attn_k_norm.weight",
}
_GEMMA3_NORMS: dict[str, str] = {
    "model.layers.{bid}.post_attention_layernorm.weight": "blk.{bid}.post_attention_norm.weight",
    "model.layers.{bid}.pre_feedforward_layernorm.weight": "blk.{bid}.ffn_norm.weight",
    "model.layers.{bid}.post_feedforward_layernorm.weight": "blk.{bid}.post_ffw_norm.weight",
}
_PERMUTE_QK = {
    "blk.{bid}.attn_q.weight": "permute_q",
    "blk.{bid}.attn_k.weight": "permute_k",
    "blk.{bid}.attn_q.bias": "permute_q",
    "blk.{bid}.attn_k.bias": "permute_k",
}
_GEMMA3_PLUS_ONE = {
    name: "plus_one"
    for name in (
        "output_norm.weight",
        *(f"blk.{{bid}}.{n}.weight" for n in ("attn_norm", "post_attention_norm", "ffn_norm")),
        *(f"blk.{{bid}}.{n}.weight" for n in ("post_ffw_norm", "attn_q_norm", "attn_k_norm")),
    )
}


@dataclass(frozen=True)
class Architecture:
    hf_classes: tuple[str, ...]  # config.json `architectures[0]` values
    gguf_arch: str
    tensors: Mapping[str, str]
    hparams: Mapping[str, HParam]
    transforms: Mapping[str, str] = field(default_factory=dict)
    skip: tuple[str, ...] = (".rotary_emb.inv_freq",)
    no_bos_vocab_sizes: tuple[int, ...] = ()  # LlamaModel.set_vocab: SmolLM/Granite (49152)
    spm_add_space_prefix: bool | None = None  # Gemma3 writes False for its SentencePiece vocab

    def gguf_name(self, hf_name: str) -> str | None:
        """The GGUF name of an HF tensor; "" for a skipped one; None for an unknown one."""
        if hf_name.endswith(self.skip):
            return ""
        for pattern, template in _compiled(self):
            m = pattern.fullmatch(hf_name)
            if m is not None:
                return template.format(bid=m["bid"]) if m.groupdict() else template
        return None

    def transform_of(self, gguf_name: str) -> str | None:
        generic = re.sub(r"^blk\.\d+\.", "blk.{bid}.", gguf_name)
        return self.transforms.get(generic)

    def metadata(self, config: Config) -> dict[str, Any]:
        """`<arch>.<key>` -> value, for every key the config provides."""
        out: dict[str, Any] = {}
        for key, hp in self.hparams.items():
            value = hp.value(config)
            if value is not None:
                out[f"{self.gguf_arch}.{key}"] = value
        out |= {f"{self.gguf_arch}.{k}": v for k, v in rope_scaling(config).items()}
        return out


_PATTERN_CACHE: dict[int, list[tuple[re.Pattern[str], str]]] = {}


def _compiled(arch: Architecture) -> list[tuple[re.Pattern[str], str]]:
    key = id(arch.tensors)
    if key not in _PATTERN_CACHE:
        _PATTERN_CACHE[key] = [
            (re.compile(re.escape(hf).replace(r"\{bid\}", r"(?P<bid>\d+)")), gguf)
            for hf, gguf in arch.tensors.items()
        ]
    return _PATTERN_CACHE[key]


LLAMA = Architecture(
    hf_classes=("LlamaForCausalLM", "MistralForCausalLM", "LLaMAForCausalLM"),
    gguf_arch="llama",
    tensors=_LLAMA_TENSORS | _QKV_BIASES,
    hparams=_COMMON
    | {
        "vocab_size": HParam(("vocab_size",)),
        "rope.dimension_count": HParam(derive=_head_dim),
    },
    transforms=_PERMUTE_QK,
    no_bos_vocab_sizes=(49152,),
)
QWEN2 = Architecture(
    hf_classes=("Qwen2ForCausalLM",),
    gguf_arch="qwen2",
    tensors=_LLAMA_TENSORS | _QKV_BIASES,
    hparams=_COMMON,
)
QWEN3 = Architecture(
    hf_classes=("Qwen3ForCausalLM",),
    gguf_arch="qwen3",
    tensors=_LLAMA_TENSORS | _QK_NORMS,
    hparams=_COMMON,
)
GEMMA3 = Architecture(
    hf_classes=("Gemma3ForCausalLM",),
    gguf_arch="gemma3",
    tensors=_LLAMA_TENSORS | _GEMMA3_NORMS | _QK_NORMS,
    hparams=_COMMON
    | {
        "context_length": HParam(("max_position_embeddings",), default=131072),
        "attention.head_count": HParam(("num_attention_heads",), default=8),
        "attention.head_count_kv": HParam(("num_key_value_heads",), default=4),
        "attention.layer_norm_rms_epsilon": HParam(("rms_norm_eps",), float, 1e-6),
        "attention.key_length": HParam(("head_dim",), default=256),
        "attention.value_length": HParam(("head_dim",), default=256),
        "rope.freq_base": HParam(("rope_theta",), float, 1_000_000.0),
        "final_logit_softcapping": HParam(derive=_softcap),
        "attention.sliding_window": HParam(derive=_gemma_sliding_window),
    },
    transforms=_GEMMA3_PLUS_ONE | {"token_embd.weight": "vocab_rows"},
    spm_add_space_prefix=False,
)
ARCHITECTURES: dict[str, Architecture] = {
    name: arch for arch in (LLAMA, QWEN2, QWEN3, GEMMA3) for name in arch.hf_classes
}


def supported() -> str:
    return ", ".join(sorted(ARCHITECTURES))


# --- RoPE scaling: config.json `rope_scaling` -> GGUF keys (or llama3's rope_freqs tensor) ---


def _rope_kind(config: Config) -> tuple[str, dict[str, Any]]:
    scaling = config.get("rope_scaling") or {}
    if not isinstance(scaling, dict):
        return "", {}
    return str(scaling.get("rope_type", scaling.get("type", ""))).lower(), scaling


def rope_scaling(config: Config) -> dict[str, Any]:
    kind, scaling = _rope_kind(config)
    if kind == "linear" and "factor" in scaling:
        return {"rope.scaling.type": "linear", "rope.scaling.factor": float(scaling["factor"])}
    if kind == "yarn" and "factor" in scaling:
        out: dict[str, Any] = {"rope.scaling.type": "yarn"}
        out["rope.scaling.factor"] = float(scaling["factor"])
        if "original_max_position_embeddings" in scaling:
            original = int(scaling["original_max_position_embeddings"])
            out["rope.scaling.original_context_length"] = original
        return out
    return {}


def extra_tensors(arch: Architecture, config: Config) -> dict[str, np.ndarray]:
    """Tensors llama.cpp generates: Llama 3.1+'s `rope_freqs`
    (LlamaModel.generate_extra_tensors)."""
    kind, scaling = _rope_kind(config)
    if arch is not LLAMA or kind != "llama3":
        return {}
    base = float(config.get("rope_theta", 10000.0))
    dim = _head_dim(config)
    freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    factor = float(scaling.get("factor", 8.0))
    low = float(scaling.get("low_freq_factor", 1.0))
    high = float(scaling.get("high_freq_factor", 4.0))
    old = float(scaling.get("original_max_position_embeddings", 8192))
    low_wavelen, high_wavelen = old / low, old / high
    factors = []
    for freq in freqs:
        wavelen = 2 * math.pi / float(freq)
        if wavelen < high_wavelen:
            factors.append(1.0)
        elif wavelen > low_wavelen:
            factors.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return {"rope_freqs.weight": np.array(factors, dtype=np.float32)}
