"""Which GGUF file of a repository a quantization tag asks for (Ollama's `hf.co/org/repo:QUANT`).

A file's quantization is read from its name (`Llama-3.2-1B-Instruct-Q4_K_M.gguf` ->
Q4_K_M, `model.f16.gguf` -> F16). A tag matches a file whose quantization equals it,
case-insensitively, or a file whose name (or path) equals it. Projector files
(`mmproj-*`) are never picked; split files (`-00001-of-00003.gguf`) are refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import PurePosixPath

from corral.registry.errors import SourceError

DEFAULT_QUANT = "Q4_K_M"
_QUANT = re.compile(
    r"(?:^|[-._])((?:IQ|Q)\d(?:_[A-Z0-9]+)*|F16|BF16|F32|FP16|FP32|MXFP4(?:_MOE)?|TQ\d_\d)"
    r"(?=[-._]|$)",
    re.IGNORECASE,
)
_SPLIT = re.compile(r"-\d{5}-of-\d{5}\.gguf$", re.IGNORECASE)
_ALIASES = {"FP16": "F16", "FP32": "F32"}
# What a missing quantization's error suggests, first one the repository has: the usual
# size/quality trade-offs before the big unquantized files.
SUGGESTED = ("Q4_K_M", "Q5_K_M", "Q4_K_S", "Q5_K_S", "Q6_K", "Q8_0", "Q4_0", "Q4_1", "Q5_0")


def quant_of(path: str) -> str | None:
    """The quantization a GGUF file name announces, upper-case, or None."""
    stem = PurePosixPath(path).name.removesuffix(".gguf").removesuffix(".GGUF")
    found = _QUANT.findall(stem)
    if not found:
        return None
    q = found[-1].upper()
    return _ALIASES.get(q, q)


def model_files(paths: Iterable[str]) -> list[str]:
    """The repository's GGUF model files (not projectors)."""
    return sorted(
        p
        for p in paths
        if p.lower().endswith(".gguf") and not PurePosixPath(p).name.lower().startswith("mmproj")
    )


def pick_gguf(paths: Iterable[str], tag: str | None, where: str) -> str:
    """The GGUF file `tag` (a quantization or a file name; default Q4_K_M) names."""
    files = model_files(paths)
    wanted = (tag or DEFAULT_QUANT).strip()
    by_name = [p for p in files if wanted.lower() in (p.lower(), PurePosixPath(p).name.lower())]
    quant = _ALIASES.get(wanted.upper(), wanted.upper())
    matches = by_name or [p for p in files if quant_of(p) == quant]
    if tag is None and not matches and len(files) == 1:
        matches = files  # a repository with one model file: that one
    if not matches:
        raise SourceError(_missing(wanted, files, where))
    whole = [p for p in matches if not _SPLIT.search(p)]
    if not whole:
        raise SourceError(
            f"{where}: {wanted} is split into {len(matches)} files ({matches[0]}, ...); "
            "corral does not join split GGUF files yet"
        )
    return min(whole, key=lambda p: (p.count("/"), len(p)))


def _missing(wanted: str, files: list[str], where: str) -> str:
    quants = sorted({q for p in files if (q := quant_of(p))})
    if quants:
        listed = ", ".join(quants)
        suggested = next((q for q in SUGGESTED if q in quants), quants[0])
        return f"{where} has no {wanted} GGUF file; it has: {listed} (pull one with :{suggested})"
    names = ", ".join(PurePosixPath(p).name for p in files[:6])
    return f"{where} has no {wanted} GGUF file; its GGUF files: {names} (name one with :<file>)"
