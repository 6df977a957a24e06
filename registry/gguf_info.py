"""What a manifest records about a GGUF file, read from its header."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from corral.registry.errors import CorruptModel
from corral.runtime.gguf import GGUFError, GGUFFile

# llama.cpp's `general.file_type` (enum llama_ftype) -> display name
FILE_TYPES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
    10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M",
    16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S",
    22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M",
    28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0",
    37: "TQ2_0", 38: "MXFP4_MOE",
}  # fmt: skip


@dataclass(frozen=True)
class GGUFSummary:
    architecture: str
    parameter_count: int
    quantization: str
    context_length: int
    has_chat_template: bool
    license: str | None


def check_gguf(path: Path, what: str | None = None) -> None:
    """Raise CorruptModel (one line) unless `path` is a complete, readable GGUF."""
    summarize(path, what)


def summarize(path: Path, what: str | None = None) -> GGUFSummary:
    """Read the header of a GGUF; CorruptModel names `what` (default: the path)."""
    label = what or str(path)
    try:
        with GGUFFile.open(path) as f:
            arch = f.get("general.architecture")
            if not isinstance(arch, str) or not arch:
                raise CorruptModel(f"{label}: GGUF has no general.architecture")
            context = f.get(f"{arch}.context_length", 0)
            return GGUFSummary(
                architecture=arch,
                parameter_count=sum(t.n_elements for t in f.tensors.values()),
                quantization=_quantization(f),
                context_length=int(context) if isinstance(context, int) else 0,
                has_chat_template=isinstance(f.get("tokenizer.chat_template"), str),
                license=_text(f.get("general.license")),
            )
    except (GGUFError, ValueError) as e:
        raise CorruptModel(f"{label}: {_strip_path(str(e), path)}") from None


def _quantization(f: GGUFFile) -> str:
    """From general.file_type; else the type holding most elements of 2-D weights."""
    ftype = f.get("general.file_type")
    if isinstance(ftype, int) and ftype in FILE_TYPES:
        return FILE_TYPES[ftype]
    counts: Counter[str] = Counter()
    for t in f.tensors.values():
        if len(t.shape) >= 2:
            counts[t.qtype.name] += t.n_elements
    return counts.most_common(1)[0][0] if counts else "unknown"


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _strip_path(message: str, path: Path) -> str:
    """GGUFError messages start with the path; the caller names the file itself."""
    prefix = f"{path}: "
    return message[len(prefix) :] if message.startswith(prefix) else message
