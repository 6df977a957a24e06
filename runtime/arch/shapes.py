"""The shape each tensor must have, from the hyper-parameters in a GGUF's metadata.

A file whose tensors disagree with its own metadata (a head count that does not divide
the query rows, an embedding length the matrices do not have) is refused when it loads,
naming the tensor, instead of failing mid-generation on a reshape, or running wrongly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from corral.runtime.gguf import GGUFError, GGUFFile

if TYPE_CHECKING:
    from corral.runtime.arch.llama import LlamaConfig

Shape = tuple[int, ...]

# tensor name (after `blk.N.` for a layer's) -> its shape from (d_model, n_heads * head_dim,
# n_kv_heads * head_dim, d_ff, head_dim, vocab_size)
EXPECTED: dict[str, Callable[[int, int, int, int, int, int], Shape]] = {
    "token_embd.weight": lambda d, q, kv, f, hd, v: (v, d),
    "output.weight": lambda d, q, kv, f, hd, v: (v, d),
    "output_norm.weight": lambda d, q, kv, f, hd, v: (d,),
    "attn_norm.weight": lambda d, q, kv, f, hd, v: (d,),
    "attn_q.weight": lambda d, q, kv, f, hd, v: (q, d),
    "attn_k.weight": lambda d, q, kv, f, hd, v: (kv, d),
    "attn_v.weight": lambda d, q, kv, f, hd, v: (kv, d),
    "attn_output.weight": lambda d, q, kv, f, hd, v: (d, q),
    "attn_q.bias": lambda d, q, kv, f, hd, v: (q,),
    "attn_k.bias": lambda d, q, kv, f, hd, v: (kv,),
    "attn_v.bias": lambda d, q, kv, f, hd, v: (kv,),
    "attn_q_norm.weight": lambda d, q, kv, f, hd, v: (hd,),
    "attn_k_norm.weight": lambda d, q, kv, f, hd, v: (hd,),
    "post_attention_norm.weight": lambda d, q, kv, f, hd, v: (d,),
    "ffn_norm.weight": lambda d, q, kv, f, hd, v: (d,),
    "ffn_gate.weight": lambda d, q, kv, f, hd, v: (f, d),
    "ffn_up.weight": lambda d, q, kv, f, hd, v: (f, d),
    "ffn_down.weight": lambda d, q, kv, f, hd, v: (d, f),
    "post_ffw_norm.weight": lambda d, q, kv, f, hd, v: (d,),
}


def check_shapes(gguf: GGUFFile, names: Iterable[str], c: LlamaConfig, arch: str) -> None:
    """GGUFError naming the first of `names` whose shape is not what the config `c` says,
    or a context length that is not positive."""
    if c.context_length < 1:
        raise GGUFError(f"{gguf.path}: {arch}.context_length must be positive")
    q, kv = c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim
    dims = (c.d_model, q, kv, c.d_ff, c.head_dim, c.vocab_size)
    for name in names:
        expected = EXPECTED.get(name.split(".", 2)[-1] if name.startswith("blk.") else name)
        if expected is None or name not in gguf.tensors:
            continue
        shape, wanted = gguf.tensors[name].shape, expected(*dims)
        if shape != wanted:
            raise GGUFError(
                f"{gguf.path}: tensor {name} has shape {shape} where the file's {arch} "
                f"metadata says {wanted}: the file is inconsistent"
            )
