"""The llama architecture: RMSNorm, RoPE, grouped-query attention, SwiGLU.

Config, weights and run state are kept apart, as in llama2.c: `LlamaConfig`
comes from GGUF metadata, `LlamaWeights` are float32 arrays fixed after load,
and the KV cache belongs to the caller (a session), so one loaded model serves
many conversations. Other architectures subclass `Llama` and override only the
hooks where they differ.

Weights keep GGUF's (out, in) row layout and are applied as `x @ W.T`, which
BLAS runs without a copy. Q, K and V are fused into one matrix, and so are the
FFN gate and up projections: one matmul each per layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from corral.runtime.gguf import GGUFError, GGUFFile
from corral.runtime.kv_cache import KVCache


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
    rms_eps: float

    @classmethod
    def from_gguf(cls, gguf: GGUFFile, arch: str) -> LlamaConfig:
        md = gguf.metadata

        def key(name: str, default: Any = None) -> Any:
            value = md.get(f"{arch}.{name}", default)
            if value is None:
                raise GGUFError(f"{gguf.path}: metadata key {arch}.{name} is missing")
            return value

        d_model, n_heads = int(key("embedding_length")), int(key("attention.head_count"))
        head_dim = int(key("attention.key_length", d_model // n_heads))
        vocab = md.get(f"{arch}.vocab_size") or gguf.tensors["token_embd.weight"].shape[0]
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
            rms_eps=float(key("attention.layer_norm_rms_epsilon", 1e-5)),
        )


@dataclass(frozen=True)
class LayerWeights:
    attn_norm: np.ndarray  # (d,)
    wqkv: np.ndarray  # (H*D + 2*KV*D, d)
    wo: np.ndarray  # (d, H*D)
    ffn_norm: np.ndarray  # (d,)
    w_gate_up: np.ndarray  # (2F, d)
    w_down: np.ndarray  # (d, F)


@dataclass(frozen=True)
class LlamaWeights:
    tok_embd: np.ndarray  # (V, d)
    layers: tuple[LayerWeights, ...]
    out_norm: np.ndarray  # (d,)
    output: np.ndarray  # (V, d); the same array as tok_embd when tied
    rope_inv_freq: np.ndarray  # (rope_dim/2,)


def load_fused(gguf: GGUFFile, names: list[str]) -> np.ndarray:
    """Dequantize several (out, in) tensors stacked along `out` into one array."""
    infos = [gguf.tensors[n] for n in names]
    rows = sum(i.shape[0] for i in infos)
    fused = np.empty((rows, infos[0].shape[1]), dtype=np.float32)
    start = 0
    for info in infos:
        fused[start : start + info.shape[0]] = gguf.load_tensor(info.name)
        start += info.shape[0]
    return fused


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """x: (T, d) -> (T, d)."""
    scale = 1.0 / np.sqrt(np.mean(np.square(x), axis=-1, keepdims=True) + eps)
    return x * scale * weight


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def softmax_inplace(x: np.ndarray) -> np.ndarray:
    x -= x.max(axis=-1, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=-1, keepdims=True)
    return x


class Llama:
    """A loaded llama-family model: config + weights + the forward pass."""

    architecture: ClassVar[str] = "llama"

    def __init__(self, config: LlamaConfig, weights: LlamaWeights) -> None:
        self.config = config
        self.weights = weights

    # ----- loading -------------------------------------------------------

    @classmethod
    def from_gguf(cls, gguf: GGUFFile) -> Llama:
        arch = str(gguf.metadata["general.architecture"])
        config = LlamaConfig.from_gguf(gguf, arch)
        missing = [n for n in cls.required_tensors(config) if n not in gguf.tensors]
        if missing:
            raise GGUFError(f"{gguf.path}: missing tensors for {arch}: {', '.join(missing[:5])}")
        return cls(config, cls.load_weights(gguf, config))

    @classmethod
    def required_tensors(cls, config: LlamaConfig) -> list[str]:
        per_layer = ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output"]
        per_layer += ["ffn_norm", "ffn_gate", "ffn_up", "ffn_down"]
        names = ["token_embd.weight", "output_norm.weight"]
        for i in range(config.n_layers):
            names += [f"blk.{i}.{p}.weight" for p in per_layer]
        return names

    @classmethod
    def load_weights(cls, gguf: GGUFFile, config: LlamaConfig) -> LlamaWeights:
        tok_embd = gguf.load_tensor("token_embd.weight")
        output = gguf.load_tensor("output.weight") if "output.weight" in gguf.tensors else tok_embd
        layers = tuple(cls.load_layer(gguf, i) for i in range(config.n_layers))
        return LlamaWeights(
            tok_embd=tok_embd,
            layers=layers,
            out_norm=gguf.load_tensor("output_norm.weight"),
            output=output,
            rope_inv_freq=cls.rope_inv_freq(gguf, config),
        )

    @classmethod
    def load_layer(cls, gguf: GGUFFile, i: int) -> LayerWeights:
        p = f"blk.{i}."
        return LayerWeights(
            attn_norm=gguf.load_tensor(p + "attn_norm.weight"),
            wqkv=load_fused(gguf, [p + "attn_q.weight", p + "attn_k.weight", p + "attn_v.weight"]),
            wo=gguf.load_tensor(p + "attn_output.weight"),
            ffn_norm=gguf.load_tensor(p + "ffn_norm.weight"),
            w_gate_up=load_fused(gguf, [p + "ffn_gate.weight", p + "ffn_up.weight"]),
            w_down=gguf.load_tensor(p + "ffn_down.weight"),
        )

    @staticmethod
    def rope_inv_freq(gguf: GGUFFile, config: LlamaConfig) -> np.ndarray:
        """theta_i = base^(-2i/rope_dim), divided by llama-3 style frequency factors if present."""
        exponents = np.arange(0, config.rope_dim, 2, dtype=np.float64) / config.rope_dim
        inv_freq = config.rope_base**-exponents  # (rope_dim/2,)
        if "rope_freqs.weight" in gguf.tensors:
            inv_freq = inv_freq / gguf.load_tensor("rope_freqs.weight").astype(np.float64)
        return inv_freq

    # ----- run state -----------------------------------------------------

    def new_cache(self, n_ctx: int) -> KVCache:
        c = self.config
        return KVCache(c.n_layers, c.n_kv_heads, n_ctx, c.head_dim)

    # ----- forward pass --------------------------------------------------

    def forward(self, tokens: np.ndarray, cache: KVCache) -> np.ndarray:
        """Run `tokens` (T,) after the cache's current length; return the last position's
        logits (V,) and advance the cache by T."""
        pos = cache.length
        x = self.embed(tokens)  # (T, d)
        cos, sin = self.rope_tables(pos, tokens.shape[0])
        for i, layer in enumerate(self.weights.layers):
            x = self.block(i, layer, x, cache, pos, cos, sin)
        cache.length = pos + tokens.shape[0]
        return self.logits(x[-1:])[0]

    def embed(self, tokens: np.ndarray) -> np.ndarray:
        return self.weights.tok_embd[tokens]  # (T, d)

    def logits(self, x: np.ndarray) -> np.ndarray:
        x = rms_norm(x, self.weights.out_norm, self.config.rms_eps)  # (1, d)
        return x @ self.weights.output.T  # (1, V)

    def block(
        self,
        i: int,
        layer: LayerWeights,
        x: np.ndarray,
        cache: KVCache,
        pos: int,
        cos: np.ndarray,
        sin: np.ndarray,
    ) -> np.ndarray:
        h = rms_norm(x, layer.attn_norm, self.config.rms_eps)
        x = x + self.attention(i, layer, h, cache, pos, cos, sin) @ layer.wo.T
        h = rms_norm(x, layer.ffn_norm, self.config.rms_eps)
        return x + self.ffn(layer, h)

    def ffn(self, layer: LayerWeights, h: np.ndarray) -> np.ndarray:
        gate_up = h @ layer.w_gate_up.T  # (T, 2F)
        f = gate_up.shape[1] // 2
        return (silu(gate_up[:, :f]) * gate_up[:, f:]) @ layer.w_down.T  # (T, d)

    def qkv(self, layer: LayerWeights, h: np.ndarray) -> tuple[np.ndarray, ...]:
        """h: (T, d) -> q (T, H, D), k (T, KV, D), v (T, KV, D)."""
        c = self.config
        qkv = h @ layer.wqkv.T  # (T, (H + 2KV) * D)
        q_end, k_end = c.n_heads * c.head_dim, (c.n_heads + c.n_kv_heads) * c.head_dim
        t = h.shape[0]
        q = qkv[:, :q_end].reshape(t, c.n_heads, c.head_dim)
        k = qkv[:, q_end:k_end].reshape(t, c.n_kv_heads, c.head_dim)
        v = qkv[:, k_end:].reshape(t, c.n_kv_heads, c.head_dim)
        return q, k, v

    def attention(
        self,
        i: int,
        layer: LayerWeights,
        h: np.ndarray,
        cache: KVCache,
        pos: int,
        cos: np.ndarray,
        sin: np.ndarray,
    ) -> np.ndarray:
        q, k, v = self.qkv(layer, h)
        q, k = self.rope(q, cos, sin), self.rope(k, cos, sin)
        keys, values = cache.store(i, pos, k, v)  # (KV, S, D) each, S = pos + T
        return attend(q, keys, values, pos, 1.0 / np.sqrt(self.config.head_dim))

    # ----- RoPE ("normal" style: adjacent pairs rotate together) ---------

    def rope_tables(self, pos: int, t: int) -> tuple[np.ndarray, np.ndarray]:
        positions = np.arange(pos, pos + t, dtype=np.float64)
        angles = np.outer(positions, self.weights.rope_inv_freq)  # (T, rope_dim/2)
        return (
            np.cos(angles).astype(np.float32)[:, None, :],  # (T, 1, rope_dim/2)
            np.sin(angles).astype(np.float32)[:, None, :],
        )

    def rope(self, x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
        """x: (T, H, D); rotates pairs (x[2i], x[2i+1]) of the first rope_dim dims."""
        n = self.config.rope_dim
        pairs = x[..., :n].reshape(*x.shape[:-1], n // 2, 2)  # (T, H, n/2, 2)
        x0, x1 = pairs[..., 0], pairs[..., 1]
        rotated = np.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], axis=-1)
        if n == x.shape[-1]:
            return rotated.reshape(x.shape)
        return np.concatenate([rotated.reshape(*x.shape[:-1], n), x[..., n:]], axis=-1)


def attend(
    q: np.ndarray, keys: np.ndarray, values: np.ndarray, pos: int, scale: float
) -> np.ndarray:
    """Causal grouped-query attention.

    q: (T, H, D) for positions pos..pos+T-1; keys, values: (KV, S, D) with
    S = pos + T. Returns (T, H*D).
    """
    t, n_heads, d = q.shape
    n_kv, s = keys.shape[0], keys.shape[1]
    group = n_heads // n_kv
    q = q.reshape(t, n_kv, group, d).transpose(1, 2, 0, 3).reshape(n_kv, group * t, d)
    scores = (q @ keys.transpose(0, 2, 1)) * np.float32(scale)  # (KV, G*T, S)
    if t > 1:
        future = np.triu(np.ones((t, s), dtype=bool), k=pos + 1)  # (T, S)
        scores = scores.reshape(n_kv, group, t, s)
        scores[:, :, future] = -np.inf
        scores = scores.reshape(n_kv, group * t, s)
    out = softmax_inplace(scores) @ values  # (KV, G*T, D)
    return out.reshape(n_kv, group, t, d).transpose(2, 0, 1, 3).reshape(t, n_heads * d)
