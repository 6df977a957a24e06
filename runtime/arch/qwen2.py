"""Qwen2 (and Qwen2.5): llama with QKV biases and NeoX-style RoPE; the output
projection is usually untied, which llama's loader already handles."""

from __future__ import annotations

from corral.runtime.arch.llama import Llama


class Qwen2(Llama):
    architecture = "qwen2"
    rope_style = "neox"
    qkv_bias = True
