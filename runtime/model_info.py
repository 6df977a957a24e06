"""What a GGUF file says about its model, read without loading any weights."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from corral.runtime.gguf import GGUFError, GGUFFile

# llama.cpp's `general.file_type` (enum llama_ftype) -> the name users know.
FILE_TYPES: dict[int, str] = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    32: "BF16",
}


@dataclass(frozen=True)
class ModelInfo:
    architecture: str
    name: str
    parameter_count: int
    context_length: int
    embedding_length: int
    block_count: int
    quantization: str
    size_label: str

    @classmethod
    def from_gguf(cls, gguf: GGUFFile) -> ModelInfo:
        md = gguf.metadata
        arch = md.get("general.architecture")
        if not isinstance(arch, str):
            raise GGUFError(f"{gguf.path}: general.architecture is missing")
        return cls(
            architecture=arch,
            name=str(md.get("general.name", "")),
            parameter_count=sum(t.n_elements for t in gguf.tensors.values()),
            context_length=int(md.get(f"{arch}.context_length", 2048)),
            embedding_length=int(md.get(f"{arch}.embedding_length", 0)),
            block_count=int(md.get(f"{arch}.block_count", 0)),
            quantization=quantization_name(gguf),
            size_label=str(md.get("general.size_label", "")),
        )


def quantization_name(gguf: GGUFFile) -> str:
    """The file type llama.cpp recorded, else the most common type among 2-D tensors."""
    file_type = gguf.metadata.get("general.file_type")
    if file_type in FILE_TYPES:
        return FILE_TYPES[file_type]
    counts = Counter(t.qtype.name for t in gguf.tensors.values() if len(t.shape) >= 2)
    return counts.most_common(1)[0][0] if counts else "unknown"
