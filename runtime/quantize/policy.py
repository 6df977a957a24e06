"""Which type each tensor gets in a mix: llama.cpp's per-tensor policy (llama-quant.cpp).

`plan()` follows `llama_tensor_get_type`: only 2-D and larger `*weight` tensors
that are not norms (and not a few small special tensors) are quantized;
output.weight (and a tied token_embd) get Q6_K, or Q8_0 when their rows do not
fit 256-value blocks; attn_v and ffn_down get more bits on the
`use_more_bits` layers; and a type whose block does not divide the row length
falls back to a 32-value type (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0,
Q2_K/Q3_K -> Q4_0), or F16 when even that does not fit. Tensors are visited in
llama.cpp's order (by layer number, then name) because the attn_v and ffn_down
counters depend on it. The importance-matrix and IQ mixes are not offered.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from corral.runtime.quantize.rules import ATTN_V_LIKE, category, is_quantizable, layer_of

_MORE_BITS = ("Q4_K_M", "Q5_K_M")


@dataclass(frozen=True)
class Mix:
    """A file type: llama.cpp's `general.file_type` number and its default tensor type."""

    name: str
    ftype: int
    default: str


MIXES: dict[str, Mix] = {
    m.name: m
    for m in (
        Mix("F32", 0, "F32"),
        Mix("F16", 1, "F16"),
        Mix("BF16", 32, "BF16"),
        Mix("Q8_0", 7, "Q8_0"),
        Mix("Q4_0", 2, "Q4_0"),
        Mix("Q4_1", 3, "Q4_1"),
        Mix("Q5_0", 8, "Q5_0"),
        Mix("Q5_1", 9, "Q5_1"),
        Mix("Q2_K", 10, "Q2_K"),
        Mix("Q3_K_S", 11, "Q3_K"),
        Mix("Q3_K_M", 12, "Q3_K"),
        Mix("Q3_K_L", 13, "Q3_K"),
        Mix("Q4_K_S", 14, "Q4_K"),
        Mix("Q4_K_M", 15, "Q4_K"),
        Mix("Q5_K_S", 16, "Q5_K"),
        Mix("Q5_K_M", 17, "Q5_K"),
        Mix("Q6_K", 18, "Q6_K"),
    )
}
ALIASES = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}  # as llama-quantize
UNQUANTIZED = ("F32", "F16", "BF16")
BLOCK_SIZES = {"F32": 1, "F16": 1, "BF16": 1, "Q8_0": 32, "Q4_0": 32, "Q4_1": 32, "Q5_0": 32}
BLOCK_SIZES |= {"Q5_1": 32, "Q2_K": 256, "Q3_K": 256, "Q4_K": 256, "Q5_K": 256, "Q6_K": 256}
FALLBACK = {"Q2_K": "Q4_0", "Q3_K": "Q4_0", "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}
# Architectures llama.cpp loads as LLM_TYPE_70B (attn_v gets Q5_K over Q3_K/Q4_K):
# layer count, and whether grouped-query attention is required.
SEVENTY_B = {"llama": (80, True), "qwen2": (80, False), "deci": (80, False)}
SEVENTY_B |= {"olmo": (80, False), "jais2": (68, False)}


class UnknownMix(ValueError):
    def __init__(self, name: str) -> None:
        known = ", ".join([*MIXES, *ALIASES])
        super().__init__(f"unknown quantization type {name!r}; choose one of: {known}")


def get_mix(name: str) -> Mix:
    """A mix by name, case-insensitive, with llama-quantize's aliases (Q4_K = Q4_K_M)."""
    key = name.strip().upper()
    key = ALIASES.get(key, key)
    if key not in MIXES:
        raise UnknownMix(name)
    return MIXES[key]


@dataclass(frozen=True)
class ModelShape:
    """The hyper-parameters the policy looks at."""

    arch: str
    n_layers: int
    n_head: int = 1
    n_head_kv: int = 1
    n_expert: int = 0

    @property
    def n_gqa(self) -> int:
        return self.n_head // self.n_head_kv if self.n_head_kv else 0

    @property
    def is_70b(self) -> bool:
        layers, needs_gqa = SEVENTY_B.get(self.arch, (-1, False))
        return self.n_layers == layers and (not needs_gqa or self.n_head != self.n_head_kv)

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> ModelShape:
        arch = str(metadata.get("general.architecture", ""))

        def first(key: str, default: int) -> int:
            value = metadata.get(f"{arch}.{key}", default)
            return int(value if isinstance(value, int | float) else value[0])

        return cls(
            arch,
            first("block_count", 0),
            first("attention.head_count", 1),
            first("attention.head_count_kv", first("attention.head_count", 1)),
            first("expert_count", 0),
        )


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]  # NumPy order: the row length is shape[-1]
    type: str = "F32"  # the source type, kept by tensors that are not quantized


def use_more_bits(i_layer: int, n_layers: int) -> bool:
    return (
        i_layer < n_layers // 8
        or i_layer >= 7 * n_layers // 8
        or (i_layer - n_layers // 8) % 3 == 2
    )


def fallback(row: int, wanted: str) -> str:
    """A type whose block fits a row of `row` values (tensor_type_fallback)."""
    if row % BLOCK_SIZES[wanted] == 0:
        return wanted
    chosen = FALLBACK.get(wanted, wanted)
    return chosen if row % BLOCK_SIZES[chosen] == 0 else "F16"


class _State:
    """llama.cpp's quantize_state_impl: counters that advance as tensors are visited."""

    def __init__(self, specs: list[TensorSpec], model: ModelShape) -> None:
        cats = [category(s.name) for s in specs]
        self.model = model
        self.n_attention_wv = sum(c in ATTN_V_LIKE for c in cats)
        self.tied = "output" not in cats
        self.n_layers = model.n_layers
        self.counters = {"attn_v": 0, "ffn_down": 0, "ffn_gate": 0, "ffn_up": 0}

    def layer(self, cat: str, name: str) -> int:
        """layer_info: the counter, or the layer in the name for MoE models."""
        index = self.counters[cat]
        if self.model.n_expert > 1:
            match = re.match(r"blk\.([+-]?\d+)\.", name)
            if not match or not 0 <= int(match.group(1)) < self.n_layers:
                raise ValueError(f"cannot tell the layer of tensor {name!r}")
            index = int(match.group(1))
        return index


def _output_type(model: ModelShape, row: int, wanted: str) -> str:
    if model.arch == "falcon" or row % BLOCK_SIZES[wanted]:
        return "Q8_0"
    return wanted if wanted == "Q8_0" else "Q6_K"


def _attn_v(st: _State, mix: str, t: str) -> str:
    m, i = st.model, st.counters["attn_v"]
    by_mix = {
        "Q2_K": "Q4_K" if m.n_gqa >= 4 else "Q3_K",
        "Q3_K_M": "Q5_K" if i < 2 else "Q4_K",
        "Q3_K_L": "Q5_K",
        "Q4_K_S": "Q5_K" if i < 4 else t,
    }
    t = by_mix.get(mix, t)
    if mix in _MORE_BITS and use_more_bits(i, st.n_attention_wv):
        t = "Q6_K"
    if m.is_70b and t in ("Q3_K", "Q4_K"):
        t = "Q5_K"
    return "Q8_0" if m.n_expert == 8 else t


def _ffn_down(st: _State, mix: str, t: str, i: int) -> str:
    n, falcon = st.n_layers, st.model.arch == "falcon"
    more = use_more_bits(i, n)
    if mix == "Q2_K":
        return "Q3_K"
    if mix == "Q3_K_M":
        return "Q5_K" if i < n // 16 else "Q4_K" if not falcon or more else "Q3_K"
    if mix == "Q3_K_L":
        return "Q4_K" if falcon else "Q5_K"
    if mix == "Q4_K_M" and falcon:
        return "Q6_K" if i < n // 16 else "Q5_K" if more else "Q4_K"
    if mix in _MORE_BITS:
        return "Q6_K" if more else t
    if mix == "Q4_K_S" and not falcon and i < n // 8:
        return "Q5_K"
    return t


def _attn_output(st: _State, mix: str, t: str) -> str:
    if st.model.arch == "falcon":
        return "Q4_K" if mix == "Q3_K_L" else t
    if st.model.n_expert == 8:
        moe = ("Q2_K", "Q3_K_S", "Q3_K_M", "Q4_K_S", "Q4_K_M")
        return "Q5_K" if mix in moe else t
    return {"Q2_K": "Q3_K", "Q3_K_M": "Q4_K", "Q3_K_L": "Q5_K"}.get(mix, t)


def _mixed_type(st: _State, mix: Mix, spec: TensorSpec, cat: str) -> str:
    """llama_tensor_get_type_impl for the K-quant and legacy mixes."""
    t, name = mix.default, mix.name
    if cat == "output" or (st.tied and cat == "token_embd"):
        return _output_type(st.model, spec.shape[-1], t)
    if cat in ATTN_V_LIKE:
        # (llama.cpp's own attn_qkv branch comes after this one in its else-if chain
        # and is never reached: fused QKV tensors are treated as attn_v)
        t = _attn_v(st, name, t)
        st.counters["attn_v"] += 1
        return t
    if cat == "attn_k":
        return "Q8_0" if st.model.n_expert == 8 else t
    if cat == "attn_output":
        return _attn_output(st, name, t)
    if cat in ("ffn_down", "ffn_gate", "ffn_up"):
        i = st.layer(cat, spec.name)
        st.counters[cat] += 1
        return _ffn_down(st, name, t, i) if cat == "ffn_down" else t
    return t


def _visit_order(specs: list[TensorSpec]) -> list[TensorSpec]:
    """llama.cpp's weights_map order: by layer number (-1 outside blocks), then name."""
    return sorted(specs, key=lambda s: (layer_of(s.name), s.name.encode()))


def plan(
    tensors: Iterable[TensorSpec | tuple[str, tuple[int, ...]] | tuple[str, tuple[int, ...], str]],
    arch: str | ModelShape,
    mix: str,
    *,
    pure: bool = False,
) -> dict[str, str]:
    """{tensor name: GGML type name} for quantizing to `mix`, in the order given.

    `arch` is an architecture name (hyper-parameters are then guessed from the
    tensor names: layer count from `blk.N.`, no grouped-query attention, no
    experts) or a ModelShape read from the file. `pure` gives every
    quantizable tensor the mix's default type (llama-quantize --pure).
    """
    specs = [t if isinstance(t, TensorSpec) else TensorSpec(*t) for t in tensors]
    model = arch if isinstance(arch, ModelShape) else _guess_shape(arch, specs)
    the_mix = get_mix(mix)
    state = _State(specs, model)
    chosen: dict[str, str] = {}
    for spec in _visit_order(specs):
        if not is_quantizable(spec.name, spec.shape):
            chosen[spec.name] = spec.type
            continue
        t = the_mix.default
        if t not in UNQUANTIZED:
            if not pure:
                t = _mixed_type(state, the_mix, spec, category(spec.name))
            t = fallback(spec.shape[-1], t)
        chosen[spec.name] = t
    return {s.name: chosen[s.name] for s in specs}


def _guess_shape(arch: str, specs: list[TensorSpec]) -> ModelShape:
    layers = {layer_of(s.name) for s in specs} - {-1}
    return ModelShape(arch, max(layers) + 1 if layers else 0)
