"""Quantize a GGUF file to a mix, streaming: one slab of rows in memory at a time.

The metadata is copied byte for byte from the source (every key keeps its exact
value type), with `general.file_type` and `general.quantization_version` set as
llama-quantize sets them and split keys dropped. Tensors keep their order; a
tensor whose planned type is already its type is copied as is, the others are
dequantized and quantized in slabs of about `SLAB_VALUES` values, so peak memory
is a constant, whatever the size of the model or of its largest tensor. The file
is written under a temporary name beside `dst` and renamed when complete.
"""

from __future__ import annotations

import logging
import mmap
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from corral.runtime.gguf import GGUFError, GGUFFile, TensorInfo
from corral.runtime.quantize.policy import ModelShape, get_mix, plan
from corral.runtime.quantize.table import quantizer
from corral.runtime.quants import QUANT_TYPES_BY_NAME

log = logging.getLogger(__name__)

SLAB_VALUES = 1 << 22  # values dequantized and quantized at once (16 MiB of float32)
QUANTIZATION_VERSION = 2  # GGML_QNT_VERSION
DROPPED_KEYS = frozenset({"split.no", "split.count", "split.tensors.count"})
_UINT32 = 4
_STRING, _ARRAY = 8, 9
_FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


@dataclass(frozen=True)
class QuantizeProgress:
    """Reported after every slab: the tensor being written and the values done so far."""

    tensor: str
    index: int  # 0-based position of the tensor
    n_tensors: int
    done: int  # values written, over all tensors
    total: int


@dataclass(frozen=True)
class QuantizeResult:
    mix: str
    file_type: int
    types: dict[str, str] = field(repr=False)  # tensor name -> type written
    n_bytes: int
    seconds: float


def quantize_gguf(
    src_path: str | Path,
    dst_path: str | Path,
    mix: str,
    *,
    pure: bool = False,
    progress: Callable[[QuantizeProgress], None] | None = None,
) -> QuantizeResult:
    """Write `dst_path`: `src_path` quantized to `mix` (Q4_K_M, Q8_0, F16, ...)."""
    the_mix = get_mix(mix)
    src, dst = Path(src_path), Path(dst_path)
    start = time.perf_counter()
    with GGUFFile.open(src) as gguf:
        infos = list(gguf.tensors.values())
        specs = [(t.name, t.shape, t.qtype.name) for t in infos]
        types = plan(specs, ModelShape.from_metadata(gguf.metadata), the_mix.name, pure=pure)
        records = _metadata_records(src, the_mix.ftype)
        alignment = int(gguf.metadata.get("general.alignment", 32))
        part = dst.with_name(f".{dst.name}.{os.getpid()}.part")
        try:
            with open(part, "wb") as out:
                _write_header(out, records, infos, types, alignment)
                _write_data(out, src, infos, types, alignment, progress)
                n_bytes = out.tell()
            os.replace(part, dst)
        finally:
            part.unlink(missing_ok=True)
    seconds = time.perf_counter() - start
    log.info("quantized %s to %s (%s) in %.1f s", src.name, dst, the_mix.name, seconds)
    return QuantizeResult(the_mix.name, the_mix.ftype, types, n_bytes, seconds)


# --- metadata: the source's key/value records, copied as bytes ---------------------------


def _metadata_records(path: Path, file_type: int) -> list[bytes]:
    """The source's key/value records with the two quantization keys set (replaced in
    place when present, appended when not) and split keys dropped."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        buf = memoryview(mm)
        try:
            records = _walk_records(buf, path)
        finally:
            buf.release()
    wanted = {
        "general.quantization_version": _u32_record(
            "general.quantization_version", QUANTIZATION_VERSION
        ),
        "general.file_type": _u32_record("general.file_type", file_type),
    }
    out = [wanted.pop(key, raw) for key, raw in records if key not in DROPPED_KEYS]
    return out + list(wanted.values())


def _walk_records(buf: memoryview, path: Path) -> list[tuple[str, bytes]]:
    if bytes(buf[:4]) != b"GGUF":
        raise GGUFError(f"{path}: not a GGUF file")
    n_kv = struct.unpack_from("<Q", buf, 16)[0]
    pos, records = 24, []
    for _ in range(n_kv):
        begin = pos
        key_len = struct.unpack_from("<Q", buf, pos)[0]
        key = bytes(buf[pos + 8 : pos + 8 + key_len]).decode("utf-8", "replace")
        vtype = struct.unpack_from("<I", buf, pos + 8 + key_len)[0]
        pos = _skip_value(buf, vtype, pos + 12 + key_len, path)
        records.append((key, bytes(buf[begin:pos])))
    return records


def _skip_value(buf: memoryview, vtype: int, pos: int, path: Path) -> int:
    if vtype in _FIXED:
        return pos + _FIXED[vtype]
    if vtype == _STRING:
        return pos + 8 + struct.unpack_from("<Q", buf, pos)[0]
    if vtype == _ARRAY:
        item, count = struct.unpack_from("<IQ", buf, pos)
        pos += 12
        if item in _FIXED:
            return pos + count * _FIXED[item]
        for _ in range(count):
            pos = _skip_value(buf, item, pos, path)
        return pos
    raise GGUFError(f"{path}: unknown GGUF metadata value type {vtype}")


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def _u32_record(key: str, value: int) -> bytes:
    return _string(key) + struct.pack("<II", _UINT32, value)


# --- tensors ---------------------------------------------------------------------------


def _padding(n: int, alignment: int) -> int:
    return -n % alignment


def _write_header(
    out: BinaryIO,
    records: list[bytes],
    infos: list[TensorInfo],
    types: dict[str, str],
    alignment: int,
) -> None:
    out.write(b"GGUF" + struct.pack("<IQQ", 3, len(infos), len(records)))
    for raw in records:
        out.write(raw)
    offset = 0
    for info in infos:
        qtype = QUANT_TYPES_BY_NAME[types[info.name]]
        ne = tuple(reversed(info.shape))  # GGUF stores the innermost dimension first
        out.write(_string(info.name) + struct.pack(f"<I{len(ne)}Q", len(ne), *ne))
        out.write(struct.pack("<IQ", qtype.type_id, offset))
        offset += qtype.nbytes(info.shape)
        offset += _padding(offset, alignment)
    out.write(b"\0" * _padding(out.tell(), alignment))


def _write_data(
    out: BinaryIO,
    src: Path,
    infos: list[TensorInfo],
    types: dict[str, str],
    alignment: int,
    progress: Callable[[QuantizeProgress], None] | None,
) -> None:
    """Read each tensor in slabs of whole rows with plain reads into one reusable
    buffer (not through the memory map, whose touched pages would stay resident)."""
    total = sum(t.n_elements for t in infos)
    done = 0
    buffer = np.empty(0, dtype=np.uint8)
    with open(src, "rb", buffering=0) as f:
        for index, info in enumerate(infos):
            row = info.shape[-1] if info.shape else 1
            rows = info.n_elements // row
            step = max(1, SLAB_VALUES // row)
            row_bytes = info.nbytes // rows
            if buffer.size < step * row_bytes:
                buffer = np.empty(min(rows, step) * row_bytes, dtype=np.uint8)
            for first in range(0, rows, step):
                count = min(step, rows - first)
                slab = buffer[: count * row_bytes]
                f.seek(info.offset + first * row_bytes)
                if f.readinto(slab) != slab.size:
                    raise GGUFError(f"{src}: tensor {info.name!r} is truncated")
                out.write(_convert(slab, info, count, types[info.name]))
                done += count * row
                if progress is not None:
                    progress(QuantizeProgress(info.name, index, len(infos), done, total))
            out.write(b"\0" * _padding(out.tell(), alignment))


def _convert(slab: np.ndarray, info: TensorInfo, rows: int, target: str) -> bytes | np.ndarray:
    """`rows` rows of a tensor, from its type to `target`, as bytes to write."""
    if info.qtype.name == target:
        return slab
    if info.qtype.name not in ("F32", "F16", "BF16"):
        log.debug("requantizing %s from %s to %s", info.name, info.qtype.name, target)
    values = info.qtype.dequantize(slab, (rows, info.shape[-1] if info.shape else 1))
    return quantizer(target).quantize(values)
