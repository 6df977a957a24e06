"""Convert a safetensors checkpoint to a GGUF file, one tensor at a time.

The GGUF header, metadata and tensor infos are written first (shapes and types
are known from the safetensors headers), then each tensor's data: read from the
memory map, transformed, cast, written, and its pages released. Peak memory is
therefore one tensor in its output type (plus a float32 copy when a cast needs
one) and a constant, not the model.

Output types follow llama.cpp's converter: 1-D tensors and norms F32; the rest F16,
or BF16 when the checkpoint is BF16 (llama.cpp's `--outtype auto`), unless asked.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from corral.registry.convert.architectures import (
    ARCHITECTURES,
    Architecture,
    extra_tensors,
    supported,
)
from corral.registry.convert.checkpoint import Checkpoint, Weights
from corral.registry.convert.safetensors import FLOAT_DTYPES, to_float32
from corral.registry.convert.tokenizer import Vocab, build_vocab
from corral.registry.convert.transforms import TRANSFORMS, Shapes, round_to
from corral.registry.errors import PullCancelled, SourceError

log = logging.getLogger(__name__)

FILE_TYPES = {"F32": gguf.LlamaFileType.ALL_F32, "F16": gguf.LlamaFileType.MOSTLY_F16}
FILE_TYPES["BF16"] = gguf.LlamaFileType.MOSTLY_BF16
_NUMPY = {"F32": np.dtype(np.float32), "F16": np.dtype(np.float16), "BF16": np.dtype(np.uint16)}
_RAW = {"BF16": gguf.GGMLQuantizationType.BF16}
SLAB = 1 << 22  # values cast at once (16 MiB of float32)


@dataclass(frozen=True)
class ConvertProgress:
    tensor: str  # GGUF name of the tensor just written
    index: int
    n_tensors: int
    done: int  # output bytes written so far
    total: int


@dataclass(frozen=True)
class ConvertResult:
    path: Path
    hf_architecture: str
    architecture: str
    file_type: str  # "F16", "BF16" or "F32"
    source_dtype: str  # the checkpoint's dtype ("BF16", "F16", "F32")
    n_tensors: int
    n_parameters: int
    largest_tensor_bytes: int  # the most one tensor took in its output type
    seconds: float


@dataclass(frozen=True)
class _Planned:
    hf: str | None  # None for a generated tensor
    name: str
    shape: tuple[int, ...]
    out: str  # "F32", "F16", "BF16"
    transform: str | None

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * _NUMPY[self.out].itemsize


def architecture_of(config: Mapping[str, Any], where: str) -> Architecture:
    """The conversion table for a config.json, or a SourceError naming what is supported."""
    names = config.get("architectures") or []
    name = str(names[0]) if names else f"(model_type {config.get('model_type', '?')})"
    arch = ARCHITECTURES.get(name)
    if arch is None:
        raise SourceError(
            f"{where}: architecture {name} is not supported for conversion "
            f"(supported: {supported()})"
        )
    return arch


def convert_checkpoint(
    ckpt: Checkpoint,
    out: Path,
    *,
    outtype: str | None = None,
    name: str | None = None,
    repo: str | None = None,
    progress: Callable[[ConvertProgress], None] | None = None,
    cancel: threading.Event | None = None,
) -> ConvertResult:
    """Write `out`: the checkpoint as a GGUF of type `outtype` (default as llama.cpp picks)."""
    start = time.perf_counter()
    config = ckpt.config()
    arch = architecture_of(config, ckpt.where)
    vocab = build_vocab(ckpt, arch, config)
    shapes = Shapes(
        n_head=int(config["num_attention_heads"]),
        n_head_kv=int(config.get("num_key_value_heads") or config["num_attention_heads"]),
        n_vocab=len(vocab.tokens),
    )
    with ckpt.open_weights() as weights:
        source_dtype = _source_dtype(weights, ckpt.where)
        ftype = (outtype or ("BF16" if source_dtype == "BF16" else "F16")).upper()
        if ftype not in FILE_TYPES:
            raise SourceError(f"cannot convert to {ftype}: choose F16, BF16 or F32")
        extras = extra_tensors(arch, config)
        plan = _plan(weights, arch, shapes, ftype, ckpt.where) + [
            _Planned(None, n, a.shape, "F32", None) for n, a in extras.items()
        ]
        w = gguf.GGUFWriter(str(out), arch.gguf_arch)
        try:
            _write_header(w, ckpt, arch, config, ftype, name, repo, vocab, plan)
            _write_data(w, weights, plan, extras, shapes, progress, cancel)
        finally:
            w.close()
    n_params = sum(int(np.prod(t.shape, dtype=np.int64)) for t in plan)
    seconds = time.perf_counter() - start
    log.info(
        "converted %s (%s) to %s %s in %.1f s", ckpt.where, arch.gguf_arch, out, ftype, seconds
    )
    return ConvertResult(
        out,
        str((config.get("architectures") or arch.hf_classes)[0]),
        arch.gguf_arch,
        ftype,
        source_dtype,
        len(plan),
        n_params,
        max(t.nbytes for t in plan),
        seconds,
    )


def _write_header(
    w: gguf.GGUFWriter,
    ckpt: Checkpoint,
    arch: Architecture,
    config: Mapping[str, Any],
    ftype: str,
    name: str | None,
    repo: str | None,
    vocab: Vocab,
    plan: list[_Planned],
) -> None:
    """Metadata, tokenizer and tensor infos: everything before the first tensor's data."""
    _write_metadata(w, arch, config, ftype, name, repo)
    if license_ := ckpt.license():
        w.add_license(license_)
    vocab.write(w)
    for t in plan:
        w.add_tensor_info(t.name, t.shape, _NUMPY[t.out], t.nbytes, raw_dtype=_RAW.get(t.out))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()


def _write_data(
    w: gguf.GGUFWriter,
    weights: Weights,
    plan: list[_Planned],
    extras: Mapping[str, np.ndarray],
    shapes: Shapes,
    progress: Callable[[ConvertProgress], None] | None,
    cancel: threading.Event | None,
) -> None:
    """Each tensor in turn: read, transform, cast, write, release its pages."""
    total, done = sum(t.nbytes for t in plan), 0
    for i, t in enumerate(plan):
        if cancel is not None and cancel.is_set():
            raise PullCancelled()
        data = extras[t.name] if t.hf is None else _tensor_data(weights, t, shapes)
        w.write_tensor_data(data)
        del data
        if t.hf is not None:
            weights.release(t.hf)
        done += t.nbytes
        if progress is not None:
            progress(ConvertProgress(t.name, i, len(plan), done, total))


def _source_dtype(weights: Weights, where: str) -> str:
    dtypes = [weights.info(n).dtype for n in weights.names()]
    floats = [d for d in dtypes if d in FLOAT_DTYPES]
    others = sorted(set(dtypes) - set(FLOAT_DTYPES))
    if others:
        raise SourceError(
            f"{where}: tensors of type {others[0]} (a quantized checkpoint?) cannot be "
            "converted; corral converts F32, F16 and BF16 checkpoints"
        )
    two_d = [weights.info(n).dtype for n in weights.names() if len(weights.info(n).shape) >= 2]
    return (two_d or floats or ["F32"])[0]


def _layer_key(name: str) -> tuple[int, str]:
    m = re.match(r"blk\.(\d+)\.", name)
    if m:
        return (int(m[1]) + 1, name)
    return (0 if name.startswith("token_embd") else 1 << 30, name)


def _plan(
    weights: Weights, arch: Architecture, shapes: Shapes, ftype: str, where: str
) -> list[_Planned]:
    planned: list[_Planned] = []
    for hf in weights.names():
        name = arch.gguf_name(hf)
        if name is None:
            raise SourceError(
                f"{where}: tensor {hf} has no GGUF name in corral's {arch.gguf_arch} table "
                "(a variant of the architecture corral does not convert yet)"
            )
        if not name:
            continue
        info = weights.info(hf)
        transform = arch.transform_of(name)
        shape = info.shape
        if transform is not None:
            shape = TRANSFORMS[transform][1](shape, shapes)
        out = "F32" if len(shape) <= 1 or name.endswith("_norm.weight") else ftype
        planned.append(_Planned(hf, name, shape, out, transform))
    return sorted(planned, key=lambda t: _layer_key(t.name))


def _tensor_data(weights: Weights, t: _Planned, shapes: Shapes) -> np.ndarray:
    assert t.hf is not None
    raw, dtype = weights.raw(t.hf), weights.info(t.hf).dtype
    if t.transform is not None:
        raw, dtype = TRANSFORMS[t.transform][0](raw, dtype, shapes)
    return _cast(raw, dtype, t.out)


def _cast(raw: np.ndarray, dtype: str, out: str) -> np.ndarray:
    """Raw bits of safetensors `dtype` -> a contiguous array of the GGUF type `out`,
    converted in slabs of SLAB values (so the float32 copy stays small)."""
    if (dtype, out) in (("BF16", "BF16"), ("F16", "F16"), ("F32", "F32")):
        return np.ascontiguousarray(raw)
    result = np.empty(raw.shape, _NUMPY[out])
    src, dst = raw.reshape(-1), result.reshape(-1)
    for start in range(0, src.size, SLAB):
        values = to_float32(src[start : start + SLAB], dtype)
        dst[start : start + SLAB] = _ENCODE[out](values)
    return result


def _bf16_bits(values: np.ndarray) -> np.ndarray:
    return (round_to(values, "BF16").view(np.uint32) >> np.uint32(16)).astype(np.uint16)


_ENCODE: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "F32": lambda v: v,
    "F16": lambda v: v.astype(np.float16),
    "BF16": _bf16_bits,
}


def _write_metadata(
    w: gguf.GGUFWriter,
    arch: Architecture,
    config: Mapping[str, Any],
    ftype: str,
    name: str | None,
    repo: str | None,
) -> None:
    w.add_type(gguf.GGUFType.MODEL)
    if name:
        w.add_name(name)
    if repo:
        w.add_string("general.source.huggingface.repository", repo)
    for key, value in arch.metadata(config).items():
        _add(w, key, value)
    w.add_file_type(int(FILE_TYPES[ftype]))
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _add(w: gguf.GGUFWriter, key: str, value: Any) -> None:
    if isinstance(value, bool):
        w.add_bool(key, value)
    elif isinstance(value, int):
        w.add_uint32(key, value)
    elif isinstance(value, float):
        w.add_float32(key, value)
    else:
        w.add_string(key, str(value))
