"""Tiny random-weight GGUFs of every architecture corral runs (llama, qwen2, qwen3, gemma3).

The same approach as tiny.py (gguf-py's GGUFWriter, tiny.py's byte-level BPE vocabulary
and ChatML template), with each architecture's own tensors and metadata, so that
llama.cpp can load the very same file as a reference.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np

from tiny import CHATML_TEMPLATE, tiny_vocab

LLAMA_TENSORS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


@dataclass(frozen=True)
class TinyShape:
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 2
    head_dim: int = 16  # written as attention.key_length when not d_model / n_heads
    d_ff: int = 128
    context_length: int = 256
    rope_base: float = 10000.0
    sliding_window: int = 0  # gemma3 only
    extra_metadata: dict[str, float | str] = field(default_factory=dict)  # arch-relative key: value


@dataclass(frozen=True)
class ArchSpec:
    """What one architecture adds to llama's tensors."""

    qkv_bias: bool = False
    qk_norm: bool = False
    post_norms: bool = False
    tied_output: bool = False


SPECS: dict[str, ArchSpec] = {
    "llama": ArchSpec(),
    "qwen2": ArchSpec(qkv_bias=True),
    "qwen3": ArchSpec(qk_norm=True),
    "gemma3": ArchSpec(qk_norm=True, post_norms=True, tied_output=True),
}


def _metadata(writer: gguf.GGUFWriter, arch: str, s: TinyShape) -> None:
    tokens, types, merges = tiny_vocab()
    writer.add_name(f"tiny-{arch}")
    writer.add_block_count(s.n_layers)
    writer.add_context_length(s.context_length)
    writer.add_embedding_length(s.d_model)
    writer.add_feed_forward_length(s.d_ff)
    writer.add_head_count(s.n_heads)
    writer.add_head_count_kv(s.n_kv_heads)
    if s.head_dim * s.n_heads != s.d_model:
        writer.add_key_length(s.head_dim)
        writer.add_value_length(s.head_dim)
    writer.add_rope_freq_base(s.rope_base)
    writer.add_layer_norm_rms_eps(1e-6)
    if s.sliding_window:
        writer.add_sliding_window(s.sliding_window)
    for name, value in s.extra_metadata.items():
        kind = gguf.GGUFValueType.STRING if isinstance(value, str) else gguf.GGUFValueType.FLOAT32
        writer.add_key_value(f"{arch}.{name}", value, kind)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")  # llama.cpp's name (tiny.py's "gpt2" is corral's alias)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHATML_TEMPLATE)


def _layer(
    p: str, s: TinyShape, spec: ArchSpec, matrix: Callable, norm: Callable, vector: Callable
) -> None:
    q, kv = s.n_heads * s.head_dim, s.n_kv_heads * s.head_dim
    shapes = {
        "attn_q": (q, s.d_model),
        "attn_k": (kv, s.d_model),
        "attn_v": (kv, s.d_model),
        "attn_output": (s.d_model, q),
        "ffn_gate": (s.d_ff, s.d_model),
        "ffn_up": (s.d_ff, s.d_model),
        "ffn_down": (s.d_model, s.d_ff),
    }
    norm(p + "attn_norm.weight", s.d_model)
    norm(p + "ffn_norm.weight", s.d_model)
    for name in LLAMA_TENSORS:
        matrix(f"{p}{name}.weight", *shapes[name])
    if spec.qkv_bias:
        for name in ("attn_q", "attn_k", "attn_v"):
            vector(f"{p}{name}.bias", shapes[name][0])
    if spec.qk_norm:
        norm(p + "attn_q_norm.weight", s.head_dim)
        norm(p + "attn_k_norm.weight", s.head_dim)
    if spec.post_norms:
        norm(p + "post_attention_norm.weight", s.d_model)
        norm(p + "post_ffw_norm.weight", s.d_model)


def write_tiny_arch(
    path: Path,
    arch: str,
    shape: TinyShape | None = None,
    seed: int = 0,
    spec: ArchSpec | None = None,
) -> Path:
    """Write a tiny all-F32 GGUF of `arch` (a key of SPECS) to `path`; `spec` overrides
    which tensors are written (to make broken files)."""
    s, spec = shape or TinyShape(), spec or SPECS[arch]
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), arch)
    _metadata(writer, arch, s)

    def matrix(name: str, rows: int, cols: int) -> None:
        writer.add_tensor(name, (rng.standard_normal((rows, cols)) * 0.2).astype(np.float32))

    def norm(name: str, n: int) -> None:
        writer.add_tensor(name, (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32))

    def vector(name: str, n: int) -> None:
        writer.add_tensor(name, (0.5 * rng.standard_normal(n)).astype(np.float32))

    vocab = len(tiny_vocab()[0])
    matrix("token_embd.weight", vocab, s.d_model)
    for i in range(s.n_layers):
        _layer(f"blk.{i}.", s, spec, matrix, norm, vector)
    norm("output_norm.weight", s.d_model)
    if not spec.tied_output:
        matrix("output.weight", vocab, s.d_model)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
