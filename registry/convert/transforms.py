"""What llama.cpp does to a tensor's data between the checkpoint and the GGUF file.

Each transform works on the raw bits as stored (BF16 as uint16) where it can, so
a BF16 checkpoint stays BF16 bit for bit; only `plus_one` computes, and it rounds
its result to the source precision as llama.cpp's torch code does (`w + 1` in
the tensor's own dtype) before the norm is written as F32.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from corral.registry.convert.safetensors import to_float32


@dataclass(frozen=True)
class Shapes:
    """What transforms need to know about the model."""

    n_head: int
    n_head_kv: int
    n_vocab: int  # rows of the tokenizer's vocabulary


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """LlamaModel.permute: each head's rows [x0..x_{h-1}, y0..y_{h-1}] -> [x0, y0, x1, y1, ...]."""
    # (n_head, 2, D/2, ...) -> (n_head, D/2, 2, ...)
    heads = w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
    return heads.swapaxes(1, 2).reshape(w.shape)


def round_to(values: np.ndarray, dtype: str) -> np.ndarray:
    """float32 values rounded to the precision of a safetensors dtype (still float32)."""
    if dtype == "BF16":
        bits = values.astype(np.float32).view(np.uint32)
        rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> 16
        return (rounded.astype(np.uint32) << 16).view(np.float32)
    if dtype == "F16":
        return values.astype(np.float16).astype(np.float32)
    return values.astype(np.float32)


def _permute_q(raw: np.ndarray, dtype: str, s: Shapes) -> tuple[np.ndarray, str]:
    return permute(raw, s.n_head), dtype


def _permute_k(raw: np.ndarray, dtype: str, s: Shapes) -> tuple[np.ndarray, str]:
    return permute(raw, s.n_head_kv), dtype


def _plus_one(raw: np.ndarray, dtype: str, s: Shapes) -> tuple[np.ndarray, str]:
    return round_to(to_float32(raw, dtype) + np.float32(1.0), dtype), "F32"


def _vocab_rows(raw: np.ndarray, dtype: str, s: Shapes) -> tuple[np.ndarray, str]:
    return raw[: s.n_vocab], dtype


Apply = Callable[[np.ndarray, str, Shapes], tuple[np.ndarray, str]]
ShapeOf = Callable[[tuple[int, ...], Shapes], tuple[int, ...]]


def _same(shape: tuple[int, ...], s: Shapes) -> tuple[int, ...]:
    return shape


def _rows(shape: tuple[int, ...], s: Shapes) -> tuple[int, ...]:
    return (min(shape[0], s.n_vocab), *shape[1:])


# transform name -> (apply, output shape, output is float32)
TRANSFORMS: dict[str, tuple[Apply, ShapeOf, bool]] = {
    "permute_q": (_permute_q, _same, False),
    "permute_k": (_permute_k, _same, False),
    "plus_one": (_plus_one, _same, True),
    "vocab_rows": (_vocab_rows, _rows, False),
}
