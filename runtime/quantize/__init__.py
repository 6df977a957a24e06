"""corral's quantizers: float32 tensors to GGML types, mixes, and GGUF re-writing.

- `quantize(values, "Q4_K")`: one tensor to one type (table.py; legacy.py and
  kquant.py hold the encoders, byte-identical to llama.cpp's reference ones).
- `plan(tensors, arch, "Q4_K_M")`: llama.cpp's per-tensor type policy (policy.py).
- `quantize_gguf(src, dst, "Q4_K_M")`: a whole file, streaming (rewrite.py).
"""

from corral.runtime.quantize.policy import (
    MIXES,
    Mix,
    ModelShape,
    TensorSpec,
    UnknownMix,
    get_mix,
    plan,
)
from corral.runtime.quantize.rewrite import QuantizeProgress, QuantizeResult, quantize_gguf
from corral.runtime.quantize.table import QUANTIZERS, UnsupportedTarget, quantize, quantizer

__all__ = [
    "MIXES",
    "QUANTIZERS",
    "Mix",
    "ModelShape",
    "QuantizeProgress",
    "QuantizeResult",
    "TensorSpec",
    "UnknownMix",
    "UnsupportedTarget",
    "get_mix",
    "plan",
    "quantize",
    "quantize_gguf",
    "quantizer",
]
