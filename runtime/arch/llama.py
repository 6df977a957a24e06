"""The llama architecture: RMSNorm, RoPE, grouped-query attention, SwiGLU.

Config, weights and run state are kept apart, as in llama2.c: `LlamaConfig`
comes from GGUF metadata, `LlamaWeights` are float32 arrays fixed after load,
and the KV cache belongs to the caller (a session), so one loaded model serves
many conversations. Other architectures subclass `Llama` and override only the
hooks where they differ; the small differences are class-level tables
(`rope_style`, `qkv_bias`, `extra_layer_tensors`) read by llama's own hooks.

Weights keep GGUF's (out, in) row layout and are applied as `x @ W.T`. The matrices
of a quantized file are rounded to bfloat16 once dequantized (`runtime/bf16.py`):
decoding reads every weight each step, and half the bytes make it nearly twice as
fast; float32 and float16 files keep float32 matrices, multiplied by BLAS. Q, K and V
are fused into one matrix, and so are the FFN gate and up projections: one matmul each
per layer. Queries and keys are
normed and rotated together, in one call each: files with NeoX's RoPE layout
(each head's dims i and i + n/2 rotate together) have their query and key rows
reordered at load into llama's adjacent pairs, the layout every architecture then
runs as complex numbers (q.k is the same in any dim order).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np

from corral.runtime.arch.ops import Matrix, Rotation, linear, rms_norm, rope, rotation, silu
from corral.runtime.arch.shapes import check_shapes
from corral.runtime.bf16 import Bf16Matrix, round_into, stores_bf16
from corral.runtime.compute_guard import COMPUTE
from corral.runtime.gguf import GGUFError, GGUFFile
from corral.runtime.kv_cache import Attention, BatchKV, KVCache, KVPool, SegmentKV, SequenceKV
from corral.runtime.pages import weight_array
from corral.runtime.quants import Convert

ROPE_SCALINGS = ("none", "linear")  # `<arch>.rope.scaling.type` values the runtime implements
# LayerWeights fields of per-head query/key RMSNorms and their tensors (qwen3, gemma3).
QK_NORM_TENSORS = (("q_norm", "attn_q_norm.weight"), ("k_norm", "attn_k_norm.weight"))

MetadataKey = Callable[..., Any]


def metadata_key(gguf: GGUFFile, arch: str) -> MetadataKey:
    """`key(name, default=None)` reads `<arch>.<name>`; a missing key without default is
    an error naming the file and the key."""
    md = gguf.metadata

    def key(name: str, default: Any = None) -> Any:
        value = md.get(f"{arch}.{name}", default)
        if value is None:
            raise GGUFError(f"{gguf.path}: metadata key {arch}.{name} is missing")
        return value

    return key


def rope_freq_scale(gguf: GGUFFile, key: MetadataKey) -> float:
    """llama.cpp's freq_scale: 1/factor of `rope.scaling.factor` (or the older
    `rope.scale_linear`); only linear scaling (or none) is implemented."""
    kind = str(key("rope.scaling.type", "none"))
    if kind not in ROPE_SCALINGS:
        raise GGUFError(
            f"{gguf.path}: RoPE scaling '{kind}' is not supported by corral's runtime "
            f"(supported: {', '.join(ROPE_SCALINGS)})"
        )
    factor = float(key("rope.scaling.factor", 0.0)) or float(key("rope.scale_linear", 0.0))
    return 1.0 / factor if factor else 1.0


@dataclass(frozen=True)
class LlamaConfig:
    """Hyper-parameters, read from `<arch>.*` GGUF metadata keys."""

    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_ff: int
    vocab_size: int
    context_length: int
    rope_base: float
    rope_dim: int
    rope_scale: float  # positions are multiplied by this (linear RoPE scaling: 1/factor)
    rms_eps: float
    attn_scale: float  # multiplies q.k before the softmax

    @classmethod
    def from_gguf(cls, gguf: GGUFFile, arch: str) -> LlamaConfig:
        key = metadata_key(gguf, arch)
        d_model, n_heads = int(key("embedding_length")), int(key("attention.head_count"))
        head_dim = int(key("attention.key_length", d_model // n_heads))
        vocab = (
            gguf.metadata.get(f"{arch}.vocab_size") or gguf.tensors["token_embd.weight"].shape[0]
        )
        return cls(
            n_layers=int(key("block_count")),
            d_model=d_model,
            n_heads=n_heads,
            n_kv_heads=int(key("attention.head_count_kv", n_heads)),
            head_dim=head_dim,
            d_ff=int(key("feed_forward_length")),
            vocab_size=int(vocab),
            context_length=int(key("context_length", 2048)),
            rope_base=float(key("rope.freq_base", 10000.0)),
            rope_dim=int(key("rope.dimension_count", head_dim)),
            rope_scale=rope_freq_scale(gguf, key),
            rms_eps=float(key("attention.layer_norm_rms_epsilon", 1e-5)),
            attn_scale=1.0 / math.sqrt(head_dim),
        )


@dataclass(frozen=True)
class LayerWeights:
    attn_norm: np.ndarray  # (d,)
    wqkv: Matrix  # (H*D + 2*KV*D, d)
    wo: Matrix  # (d, H*D)
    ffn_norm: np.ndarray  # (d,)
    w_gate_up: Matrix  # (2F, d)
    w_down: Matrix  # (d, F)
    # Present only in the architectures whose tables ask for them:
    bqkv: np.ndarray | None = None  # (H*D + 2*KV*D,) QKV biases
    q_norm: np.ndarray | None = None  # (D,) RMSNorm of each query head, before RoPE
    k_norm: np.ndarray | None = None  # (D,) RMSNorm of each key head, before RoPE
    qk_norm: np.ndarray | None = None  # (H + KV, D): q_norm for each query head, then k_norm
    attn_post_norm: np.ndarray | None = None  # (d,) RMSNorm of the attention output
    ffn_post_norm: np.ndarray | None = None  # (d,) RMSNorm of the FFN output


@dataclass(frozen=True)
class LlamaWeights:
    tok_embd: Matrix  # (V, d)
    layers: tuple[LayerWeights, ...]
    out_norm: np.ndarray  # (d,)
    output: Matrix  # (V, d); the same matrix as tok_embd when tied
    rope_inv_freq: np.ndarray  # (rope_dim/2,)


def load_fused(
    gguf: GGUFFile,
    names: list[str],
    dtype: np.dtype | type = np.float32,
    convert: Convert | None = None,
) -> np.ndarray:
    """Dequantize several (out, in) tensors (or (out,) vectors) stacked along `out`:
    float32, or `dtype` as `convert` writes it from float32 chunks."""
    infos = [gguf.tensors[n] for n in names]
    fused = weight_array((sum(i.shape[0] for i in infos), *infos[0].shape[1:]), dtype)
    start = 0
    for info in infos:
        gguf.load_tensor_into(info.name, fused[start : start + info.shape[0]], convert)
        start += info.shape[0]
    return fused


def load_matrix(gguf: GGUFFile, names: list[str], bf16: bool) -> Matrix:
    """Several (out, in) tensors stacked along `out`, as the model keeps them: bfloat16
    when `bf16` and every one is quantized (dequantized straight into it, with no
    float32 copy of the whole), else float32."""
    if bf16 and all(stores_bf16(gguf.tensors[n].qtype.name) for n in names):
        return Bf16Matrix(load_fused(gguf, names, np.uint16, round_into))
    return load_fused(gguf, names)


def inv_frequencies(base: float, rope_dim: int, scale: float = 1.0) -> np.ndarray:
    """theta_i = scale * base^(-2i/rope_dim): (rope_dim/2,) float64."""
    exponents = np.arange(0, rope_dim, 2, dtype=np.float64) / rope_dim
    return scale * base**-exponents


class Llama:
    """A loaded llama-family model: config + weights + the forward pass."""

    architecture: ClassVar[str] = "llama"
    config_type: ClassVar[type[LlamaConfig]] = LlamaConfig
    rope_style: ClassVar[str] = "normal"  # the file's RoPE pairs: a key of ROPE_LAYOUTS
    qkv_bias: ClassVar[bool] = False  # attn_{q,k,v}.bias tensors, fused into LayerWeights.bqkv
    # Further LayerWeights fields, each read from one `blk.N.<tensor>`: (field, tensor) pairs.
    extra_layer_tensors: ClassVar[tuple[tuple[str, str], ...]] = ()

    def __init__(self, config: LlamaConfig, weights: LlamaWeights) -> None:
        self.config = config
        self.weights = weights
        # x (N, in) @ w.T: ops.linear, or a SplitLinear's when the weights are shared
        self.linear: Callable[[np.ndarray, Matrix], np.ndarray] = linear

    # ----- loading -------------------------------------------------------

    @classmethod
    def from_gguf(cls, gguf: GGUFFile, bf16: bool = True) -> Llama:
        """The model in `gguf`; `bf16`: round a quantized file's matrices to bfloat16."""
        arch = str(gguf.metadata["general.architecture"])
        config = cls.config_type.from_gguf(gguf, arch)
        required = cls.required_tensors(config)
        missing = [n for n in required if n not in gguf.tensors]
        if missing:
            raise GGUFError(f"{gguf.path}: missing tensors for {arch}: {', '.join(missing[:5])}")
        check_shapes(gguf, [*required, "output.weight"], config, arch)
        return cls(config, cls.load_weights(gguf, config, bf16))

    @classmethod
    def layer_tensors(cls) -> list[str]:
        """Tensor names (after `blk.N.`) every layer must have."""
        names = ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output"]
        names = [f"{n}.weight" for n in (*names, "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")]
        if cls.qkv_bias:
            names += ["attn_q.bias", "attn_k.bias", "attn_v.bias"]
        return names + [tensor for _, tensor in cls.extra_layer_tensors]

    @classmethod
    def required_tensors(cls, config: LlamaConfig) -> list[str]:
        names = ["token_embd.weight", "output_norm.weight"]
        for i in range(config.n_layers):
            names += [f"blk.{i}.{n}" for n in cls.layer_tensors()]
        return names

    @classmethod
    def load_weights(cls, gguf: GGUFFile, config: LlamaConfig, bf16: bool = True) -> LlamaWeights:
        tok_embd = load_matrix(gguf, ["token_embd.weight"], bf16)
        tied = "output.weight" not in gguf.tensors
        output = tok_embd if tied else load_matrix(gguf, ["output.weight"], bf16)
        layers = tuple(cls.load_layer(gguf, config, i, bf16) for i in range(config.n_layers))
        return LlamaWeights(
            tok_embd=tok_embd,
            layers=layers,
            out_norm=gguf.load_tensor("output_norm.weight"),
            output=output,
            rope_inv_freq=cls.rope_inv_freq(gguf, config),
        )

    @classmethod
    def load_layer(cls, gguf: GGUFFile, config: LlamaConfig, i: int, bf16: bool) -> LayerWeights:
        p = f"blk.{i}."
        names = {
            "wqkv": [p + "attn_q.weight", p + "attn_k.weight", p + "attn_v.weight"],
            "wo": [p + "attn_output.weight"],
            "w_gate_up": [p + "ffn_gate.weight", p + "ffn_up.weight"],
            "w_down": [p + "ffn_down.weight"],
        }
        extra = {f: gguf.load_tensor(p + n) for f, n in cls.extra_layer_tensors}
        if cls.qkv_bias:
            extra["bqkv"] = load_fused(gguf, [p + f"attn_{x}.bias" for x in "qkv"])
        layer = LayerWeights(
            attn_norm=gguf.load_tensor(p + "attn_norm.weight"),
            ffn_norm=gguf.load_tensor(p + "ffn_norm.weight"),
            **{field: load_matrix(gguf, tensors, bf16) for field, tensors in names.items()},
            **extra,
        )
        order = ROPE_LAYOUTS[cls.rope_style](config.head_dim, config.rope_dim)
        return pair_layout(layer, config, order)

    @staticmethod
    def rope_inv_freq(gguf: GGUFFile, config: LlamaConfig) -> np.ndarray:
        """Frequencies of the rotation, divided by llama-3 style frequency factors if present."""
        inv_freq = inv_frequencies(config.rope_base, config.rope_dim, config.rope_scale)
        if "rope_freqs.weight" in gguf.tensors:
            inv_freq = inv_freq / gguf.load_tensor("rope_freqs.weight").astype(np.float64)
        return inv_freq

    def matrices(self) -> list[Matrix]:
        """Every (out, in) weight that `linear` multiplies by, each once."""
        w = self.weights
        by_layer = [(x.wqkv, x.wo, x.w_gate_up, x.w_down) for x in w.layers]
        return [m for layer in by_layer for m in layer] + [w.output]

    # ----- run state -----------------------------------------------------

    def new_cache(self, n_ctx: int) -> KVCache:
        c = self.config
        return KVCache(c.n_layers, c.n_kv_heads, n_ctx, c.head_dim)

    def new_pool(self, n_slots: int, n_ctx: int) -> KVPool:
        c = self.config
        return KVPool(c.n_layers, c.n_kv_heads, n_ctx, c.head_dim, n_slots)

    # ----- forward pass --------------------------------------------------

    def forward(self, tokens: np.ndarray, cache: KVCache) -> np.ndarray:
        """Run `tokens` (T,) after the cache's current length; return the last position's
        logits (V,) and advance the cache by T."""
        return self.logits(self.hidden(tokens, cache)[-1:])[0]

    def hidden(self, tokens: np.ndarray, cache: KVCache) -> np.ndarray:
        """The last layer's output (T, d) for `tokens` (T,); advances the cache by T.
        `logits(hidden(...))` gives every position's logits (teacher forcing, perplexity)."""
        pos = cache.length
        x = self.run_layers(tokens, SequenceKV(cache), np.arange(pos, pos + tokens.shape[0]))
        cache.length = pos + tokens.shape[0]
        return x

    def forward_batch(self, tokens: np.ndarray, caches: Sequence[KVCache]) -> np.ndarray:
        """One decoding step of B independent sequences: token b (B,) runs after caches[b]'s
        current length. Every weight matrix is read once for the whole batch. Returns the
        logits (B, V) and advances each cache by one."""
        return self.logits(
            self.hidden_batch([tokens[b : b + 1] for b in range(len(caches))], caches)
        )

    def hidden_batch(self, segments: Sequence[np.ndarray], caches: Sequence[KVCache]) -> np.ndarray:
        """One pass for several sequences at once: segment b (n_b,) runs after caches[b]'s
        current length (one token for a decoding sequence, a prompt chunk for another).
        Every weight matrix is read once for all of them. Returns each segment's last
        hidden state (B, d) and advances each cache by its segment's length."""
        counts = [s.shape[0] for s in segments]
        positions = np.concatenate(
            [np.arange(c.length, c.length + n) for c, n in zip(caches, counts, strict=True)]
        )  # (N,)
        one_each = all(n == 1 for n in counts)
        kv = BatchKV(caches) if one_each else SegmentKV(caches, counts)
        x = self.run_layers(np.concatenate(segments), kv, positions)  # (N, d)
        for cache, n in zip(caches, counts, strict=True):
            cache.length += n
        return x if one_each else x[np.cumsum(counts) - 1]  # (B, d)

    def run_layers(self, tokens: np.ndarray, kv: Attention, positions: np.ndarray) -> np.ndarray:
        """Embed `tokens` (T,) at `positions` (T,) and run every block: (T, d)."""
        x = self.embed(tokens)  # (T, d)
        rotations = self.rotations(positions)
        with COMPUTE.shared():
            for i, layer in enumerate(self.weights.layers):
                x = self.block(i, layer, x, kv, rotations[i])
        return x

    def embed(self, tokens: np.ndarray) -> np.ndarray:
        return self.weights.tok_embd[tokens]  # (T, d)

    def logits(self, x: np.ndarray) -> np.ndarray:
        x = rms_norm(x, self.weights.out_norm, self.config.rms_eps)  # (N, d)
        with COMPUTE.shared():
            return self.linear(x, self.weights.output)  # (N, V)

    def rotations(self, positions: np.ndarray) -> Sequence[Rotation]:
        """The RoPE rotations (`ops.rotation`) of `positions` (T,), one per layer."""
        rot = rotation(self.weights.rope_inv_freq, positions, self.config.head_dim)
        return [rot] * self.config.n_layers

    def block(
        self, i: int, layer: LayerWeights, x: np.ndarray, kv: Attention, rot: Rotation
    ) -> np.ndarray:
        h = rms_norm(x, layer.attn_norm, self.config.rms_eps)
        x = x + self.linear(self.attention(i, layer, h, kv, rot), layer.wo)
        h = rms_norm(x, layer.ffn_norm, self.config.rms_eps)
        return x + self.ffn(layer, h)

    def ffn(self, layer: LayerWeights, h: np.ndarray) -> np.ndarray:
        gate_up = self.linear(h, layer.w_gate_up)  # (T, 2F)
        f = gate_up.shape[1] // 2
        return self.linear(silu(gate_up[:, :f]) * gate_up[:, f:], layer.w_down)  # (T, d)

    def qkv(self, layer: LayerWeights, h: np.ndarray) -> tuple[np.ndarray, ...]:
        """h: (T, d) -> q and k together (T, H + KV, D), v (T, KV, D); biased and q/k-normed
        when the layer has those weights."""
        c = self.config
        qkv = self.linear(h, layer.wqkv)  # (T, (H + 2KV) * D)
        if layer.bqkv is not None:
            qkv += layer.bqkv
        k_end = (c.n_heads + c.n_kv_heads) * c.head_dim
        t = h.shape[0]
        qk = qkv[:, :k_end].reshape(t, c.n_heads + c.n_kv_heads, c.head_dim)
        v = qkv[:, k_end:].reshape(t, c.n_kv_heads, c.head_dim)
        if layer.qk_norm is not None:
            qk = rms_norm(qk, layer.qk_norm, c.rms_eps)
        return qk, v

    def attention(
        self, i: int, layer: LayerWeights, h: np.ndarray, kv: Attention, rot: Rotation
    ) -> np.ndarray:
        qk, v = self.qkv(layer, h)
        qk = rope(qk, rot)  # (T, H + KV, D)
        q, k = qk[:, : self.config.n_heads], qk[:, self.config.n_heads :]
        return kv.attend(i, q, k, v, self.config.attn_scale, self.window(i))  # (T, H*D)

    def window(self, i: int) -> int:
        """Layer i's sliding attention window in tokens; 0 attends to every earlier token."""
        return 0


# ----- RoPE layouts ----------------------------------------------------------


def pairs(head_dim: int, rope_dim: int) -> np.ndarray:
    """llama's pairs (2i, 2i+1) as stored: every dim stays in place: (D,)."""
    return np.arange(head_dim)


def halves_to_pairs(head_dim: int, rope_dim: int) -> np.ndarray:
    """The order of a head's dims that turns NeoX's RoPE pairs (i, i + n/2) into llama's
    (2i, 2i+1) for the first n = rope_dim dims; the rest stay in place: (D,)."""
    half = rope_dim // 2
    paired = np.stack([np.arange(half), np.arange(half) + half], axis=1).reshape(-1)
    return np.concatenate([paired, np.arange(rope_dim, head_dim)])


# The file's RoPE pairing (head_dim, rope_dim) -> the order of each query/key head's
# dims that puts them in llama's pairs.
ROPE_LAYOUTS: dict[str, Callable[[int, int], np.ndarray]] = {
    "normal": pairs,
    "neox": halves_to_pairs,
}


def pair_layout(layer: LayerWeights, config: LlamaConfig, order: np.ndarray) -> LayerWeights:
    """The layer with each query and key head's dims in `order` (D,), and its q/k norms
    stacked into one (H + KV, D) weight."""
    heads = config.n_heads + config.n_kv_heads
    qk_rows = heads * config.head_dim
    if not np.array_equal(order, np.arange(config.head_dim)):
        rows = (np.arange(heads)[:, None] * config.head_dim + order).reshape(-1)  # (qk_rows,)
        wqkv = layer.wqkv.bits if isinstance(layer.wqkv, Bf16Matrix) else layer.wqkv
        wqkv[:qk_rows] = wqkv[rows]  # the fresh arrays of this load, in place
        if layer.bqkv is not None:
            layer.bqkv[:qk_rows] = layer.bqkv[rows]
    if layer.q_norm is None or layer.k_norm is None:
        return layer
    q_norm, k_norm = layer.q_norm[order], layer.k_norm[order]  # (D,) each
    qk_norm = np.concatenate(
        [np.tile(q_norm, (config.n_heads, 1)), np.tile(k_norm, (config.n_kv_heads, 1))]
    )  # (H + KV, D)
    return replace(layer, qk_norm=qk_norm)
