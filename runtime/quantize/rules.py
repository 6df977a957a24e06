"""Tensor names as llama.cpp's quantizer reads them (llama-quant.cpp).

Which tensors may be quantized at all (`tensor_allows_quantization`), the broad
category of a name (`tensor_get_category`) and the layer a name belongs to
(the `blk.%d.` that orders llama.cpp's weights map).
"""

from __future__ import annotations

import re

TOKEN_EMBD_NAMES = ("token_embd.weight", "per_layer_token_embd.weight")
# (substring, category), first match wins, after output / token_embd by exact name.
CATEGORIES: tuple[tuple[str, str], ...] = (
    ("attn_qkv.weight", "attn_qkv"),
    ("attn_kv_b.weight", "attn_kv_b"),
    ("attn_v.weight", "attn_v"),
    ("attn_k.weight", "attn_k"),
    ("attn_q.weight", "attn_q"),
    ("attn_output.weight", "attn_output"),
    ("ffn_up", "ffn_up"),
    ("ffn_gate", "ffn_gate"),
    ("ffn_down", "ffn_down"),
)
ATTN_V_LIKE = frozenset({"attn_v", "attn_qkv", "attn_kv_b"})
# Weights kept as they are: norms, MoE routers, tiny or positional tensors.
KEEP_SUBSTRINGS: tuple[str, ...] = (
    "_norm.weight",
    "ffn_gate_inp.weight",
    "ffn_gate_tid2eid.weight",
    "altup",
    "laurel",
    "per_layer_model_proj",
    "ssm_conv1d",
    "shortconv.conv.weight",
    "indexer.k_proj.weight",
    "indexer.q_proj.weight",
    *(
        f"time_mix_{part}.weight"
        for part in (
            "first",
            "w0",
            "w1",
            "w2",
            "v0",
            "v1",
            "v2",
            "a0",
            "a1",
            "a2",
            "g1",
            "g2",
            "decay_w1",
            "decay_w2",
            "lerp_fused",
        )
    ),
    "attn_rel_b.weight",
    ".position_embd",
    "sam.pos_embd",
    "sam.neck.",
    "sam.net_",
    ".rel_pos",
    ".patch_embd",
    ".patch_merger",
    "a.rvq.codebook",
    "mm.a.code_embd",
)
KEEP_NAMES = frozenset({"position_embd.weight", "token_types.weight"})
_LAYER = re.compile(r"blk\.([+-]?\d+)")


def n_dims(shape: tuple[int, ...]) -> int:
    """ggml_n_dims: dimensions up to the last one larger than 1 in ggml's order
    (leading 1s in NumPy's order do not count); at least 1."""
    dims = list(shape)
    while len(dims) > 1 and dims[0] == 1:
        dims.pop(0)
    return max(1, len(dims))


def is_quantizable(name: str, shape: tuple[int, ...]) -> bool:
    """2-D or larger `*weight` tensors, except the kept ones."""
    if n_dims(shape) < 2 or not name.endswith("weight") or name in KEEP_NAMES:
        return False
    return not any(part in name for part in KEEP_SUBSTRINGS)


def category(name: str) -> str:
    if name == "output.weight":
        return "output"
    if name in TOKEN_EMBD_NAMES:
        return "token_embd"
    return next((cat for part, cat in CATEGORIES if part in name), "other")


def layer_of(name: str) -> int:
    """The N of a leading `blk.N.`, or -1 (sscanf("blk.%d.") semantics)."""
    match = _LAYER.match(name)
    return int(match.group(1)) if match else -1
