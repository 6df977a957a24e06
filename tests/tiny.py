"""Tiny random-weight llama GGUF files for fast unit tests.

Written with gguf-py's GGUFWriter (the reference writer, not ours), with a
byte-level BPE vocabulary (256 byte tokens, a few merges, ChatML specials)
and a ChatML chat template, so every part of the pipeline runs for real.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import gguf
import numpy as np

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
ENDLESS_EMBEDDING = 40.0  # dimension 0 of every token embedding, with endless=True
ENDLESS_SPECIAL_LOGIT = -20.0  # dimension 0 of the special tokens' output rows
MERGES = ("Ġ t", "h e", "Ġt he", "i n", "e r", "Ġ a", "o n", "r e", "Ġ s", "a t")


def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    )
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def tiny_vocab(specials: Sequence[str] = SPECIALS) -> tuple[list[str], list[int], list[str]]:
    """(tokens, token types, merges): specials first, then bytes, then merged tokens."""
    tokens = list(specials) + [byte_to_unicode()[b] for b in range(256)]
    types = [gguf.TokenType.CONTROL] * len(specials) + [gguf.TokenType.NORMAL] * 256
    for merge in MERGES:
        tokens.append(merge.replace(" ", ""))
        types.append(gguf.TokenType.NORMAL)
    return tokens, [int(t) for t in types], list(MERGES)


def write_tiny_llama(
    path: Path,
    *,
    d_model: int = 64,
    n_layers: int = 2,
    n_heads: int = 4,
    n_kv_heads: int = 2,
    d_ff: int = 128,
    context_length: int = 256,
    weight_type: str = "F32",
    seed: int = 0,
    endless: bool = False,
    specials: Sequence[str] = SPECIALS,
    chat_template: str | None = CHATML_TEMPLATE,
    add_bos: bool = False,
    pre: str = "gpt2",
    extra_arrays: Mapping[str, Sequence[int]] | None = None,
    misstated: Mapping[str, int] | None = None,
) -> Path:
    """Write a tiny llama GGUF to `path`; 2-D weights use `weight_type` (F32, F16, Q8_0, ...).

    `endless`: the model can never pick a special token, so it never ends a generation
    by itself (for tests of streams that run until cancelled). Every embedding carries a
    large constant in dimension 0, which keeps that dimension of the residual stream
    positive, and the special tokens' output rows are strongly negative there.

    `specials` are the control tokens (ids 0.., BOS = 0, EOS = 2, so at least three),
    `chat_template` the template stored (None: none), `add_bos` the tokenizer's flag, `pre`
    the pre-tokenizer name (llama.cpp knows "gpt-2", not corral's alias "gpt2"),
    `extra_arrays` more metadata keys holding integer arrays, `misstated` hyper-parameters
    written with another value than the tensors have (`llama.<key>` -> value).
    """
    rng = np.random.default_rng(seed)
    tokens, types, merges = tiny_vocab(specials)
    head_dim = d_model // n_heads
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    stated = {
        "context_length": context_length,
        "embedding_length": d_model,
        "feed_forward_length": d_ff,
        "attention.head_count": n_heads,
        "attention.head_count_kv": n_kv_heads,
        **(misstated or {}),
    }
    writer.add_block_count(n_layers)
    writer.add_context_length(stated["context_length"])
    writer.add_embedding_length(stated["embedding_length"])
    writer.add_feed_forward_length(stated["feed_forward_length"])
    writer.add_head_count(stated["attention.head_count"])
    writer.add_head_count_kv(stated["attention.head_count_kv"])
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(add_bos)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    for key, values in (extra_arrays or {}).items():
        writer.add_array(key, list(values))

    qtype = gguf.GGMLQuantizationType[weight_type]

    def matrix(name: str, rows: int, cols: int) -> None:
        data = (rng.standard_normal((rows, cols)) * 0.2).astype(np.float32)
        if endless and name == "token_embd.weight":
            data[:, 0] = ENDLESS_EMBEDDING
        if endless and name == "output.weight":
            data[: len(specials), 0] = ENDLESS_SPECIAL_LOGIT
        if qtype == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(name, data)
        else:
            writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)

    def norm(name: str, n: int) -> None:
        writer.add_tensor(name, (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32))

    vocab = len(tokens)
    matrix("token_embd.weight", vocab, d_model)
    for i in range(n_layers):
        p = f"blk.{i}."
        norm(p + "attn_norm.weight", d_model)
        matrix(p + "attn_q.weight", n_heads * head_dim, d_model)
        matrix(p + "attn_k.weight", n_kv_heads * head_dim, d_model)
        matrix(p + "attn_v.weight", n_kv_heads * head_dim, d_model)
        matrix(p + "attn_output.weight", d_model, n_heads * head_dim)
        norm(p + "ffn_norm.weight", d_model)
        matrix(p + "ffn_gate.weight", d_ff, d_model)
        matrix(p + "ffn_up.weight", d_ff, d_model)
        matrix(p + "ffn_down.weight", d_model, d_ff)
    norm("output_norm.weight", d_model)
    matrix("output.weight", vocab, d_model)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
