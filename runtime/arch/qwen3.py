"""Qwen3 (dense): llama with an RMSNorm on every query and key head before RoPE,
NeoX-style RoPE, no biases; its head size comes from `attention.key_length`
(not d_model / n_heads), which llama's config already reads."""

from __future__ import annotations

from corral.runtime.arch.llama import QK_NORM_TENSORS, Llama


class Qwen3(Llama):
    architecture = "qwen3"
    rope_style = "neox"
    extra_layer_tensors = QK_NORM_TENSORS
