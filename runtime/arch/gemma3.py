"""Gemma 3 (text): llama with these differences, as llama.cpp runs it.

- Embeddings are scaled by sqrt(d_model).
- RMSNorm weights are used as stored: llama.cpp's converter already adds Gemma's
  +1 to every `*norm.weight` (Gemma3RMSNorm computes x * (1 + w)).
- Each block norms the attention and FFN outputs again (`post_attention_norm`,
  `post_ffw_norm`) before adding them to the residual stream.
- Queries and keys get a per-head RMSNorm before RoPE (`attn_q_norm`, `attn_k_norm`).
- The FFN is GELU(tanh)-gated instead of SiLU-gated.
- Attention scale 1/sqrt(query_pre_attn_scalar), which GGUF does not store:
  like llama.cpp, head_dim, except d_model / n_heads for the 62-layer 27B.
- With `attention.sliding_window` set, five of every six layers attend over that
  window only and use RoPE base 10000 unscaled; every sixth layer (5, 11, ...) is
  global, with `rope.freq_base` and any linear RoPE scaling.
- NeoX-style RoPE; output tied to the embeddings; optional final logit soft-capping.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

from corral.runtime.arch.llama import (
    QK_NORM_TENSORS,
    LayerWeights,
    Llama,
    LlamaConfig,
    LlamaWeights,
    inv_frequencies,
    metadata_key,
)
from corral.runtime.arch.ops import Rotation, gelu_tanh, rms_norm, rotation
from corral.runtime.gguf import GGUFFile
from corral.runtime.kv_cache import Attention

SWA_PATTERN = 6  # llama.cpp: layer i slides when i % 6 < 5
ROPE_BASE_LOCAL = 10000.0  # sliding-window layers (HF: rope_local_base_freq)
LAYERS_27B = 62  # the one size whose query_pre_attn_scalar is d_model / n_heads


@dataclass(frozen=True)
class Gemma3Config(LlamaConfig):
    sliding_window: int  # tokens; 0 means every layer is global
    swa_pattern: int
    rope_base_local: float
    logit_softcap: float  # 0: none

    @classmethod
    def from_gguf(cls, gguf: GGUFFile, arch: str) -> Gemma3Config:
        base = LlamaConfig.from_gguf(gguf, arch)
        key = metadata_key(gguf, arch)
        scalar = base.d_model // base.n_heads if base.n_layers == LAYERS_27B else base.head_dim
        values = {f.name: getattr(base, f.name) for f in fields(LlamaConfig)}
        values["attn_scale"] = 1.0 / math.sqrt(scalar)
        return cls(
            **values,
            sliding_window=int(key("attention.sliding_window", 0)),
            swa_pattern=SWA_PATTERN,
            rope_base_local=ROPE_BASE_LOCAL,
            logit_softcap=float(key("final_logit_softcapping", 0.0)),
        )

    def is_local(self, i: int) -> bool:
        return self.sliding_window > 0 and i % self.swa_pattern < self.swa_pattern - 1


class Gemma3(Llama):
    architecture = "gemma3"
    config_type = Gemma3Config
    rope_style = "neox"
    extra_layer_tensors = (
        *QK_NORM_TENSORS,
        ("attn_post_norm", "post_attention_norm.weight"),
        ("ffn_post_norm", "post_ffw_norm.weight"),
    )
    config: Gemma3Config

    def __init__(self, config: LlamaConfig, weights: LlamaWeights) -> None:
        super().__init__(config, weights)
        self.local_inv_freq = inv_frequencies(self.config.rope_base_local, self.config.rope_dim)
        self.embed_scale = np.float32(math.sqrt(self.config.d_model))

    def embed(self, tokens: np.ndarray) -> np.ndarray:
        return self.weights.tok_embd[tokens] * self.embed_scale  # (T, d)

    def logits(self, x: np.ndarray) -> np.ndarray:
        logits = super().logits(x)  # (N, V)
        cap = np.float32(self.config.logit_softcap)
        return cap * np.tanh(logits / cap) if cap > 0 else logits

    def rotations(self, positions: np.ndarray) -> Sequence[Rotation]:
        head_dim = self.config.head_dim
        local = rotation(self.local_inv_freq, positions, head_dim)
        full = rotation(self.weights.rope_inv_freq, positions, head_dim)
        return [local if self.config.is_local(i) else full for i in range(self.config.n_layers)]

    def window(self, i: int) -> int:
        return self.config.sliding_window if self.config.is_local(i) else 0

    def block(
        self, i: int, layer: LayerWeights, x: np.ndarray, kv: Attention, rot: Rotation
    ) -> np.ndarray:
        eps = self.config.rms_eps
        h = rms_norm(x, layer.attn_norm, eps)
        attn = self.linear(self.attention(i, layer, h, kv, rot), layer.wo)  # (T, d)
        x = x + rms_norm(attn, layer.attn_post_norm, eps)
        h = rms_norm(x, layer.ffn_norm, eps)
        return x + rms_norm(self.ffn(layer, h), layer.ffn_post_norm, eps)

    def ffn(self, layer: LayerWeights, h: np.ndarray) -> np.ndarray:
        gate_up = self.linear(h, layer.w_gate_up)  # (T, 2F)
        f = gate_up.shape[1] // 2
        return self.linear(gelu_tanh(gate_up[:, :f]) * gate_up[:, f:], layer.w_down)  # (T, d)
