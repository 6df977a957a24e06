"""A small, lazy, memory-mapped safetensors reader.

The format: an 8-byte little-endian header length N, N bytes of JSON
`{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`,
then the raw little-endian tensor bytes (offsets are relative to the end of the
header). Opening a file reads only the header; `raw(name)` is a view into the
memory map, so a checkpoint is read one tensor at a time. `release(name)` tells
the kernel the pages of a tensor that was used are no longer needed, so the
resident set stays bounded by what is being converted, not by the file.

BF16 has no NumPy dtype: `raw` returns its bits as uint16 and `to_float32`
widens them.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from corral.registry.errors import CorruptModel

MAX_HEADER = 100 << 20  # the reference implementation refuses larger headers too
PAGE = mmap.PAGESIZE

# safetensors dtype -> NumPy dtype of the raw bits
DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")


@dataclass(frozen=True)
class SafeTensor:
    name: str
    dtype: str  # safetensors dtype name: "BF16", "F16", "F32", ...
    shape: tuple[int, ...]
    start: int  # absolute offset of the first byte in the file
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


class SafetensorsFile:
    """One .safetensors file, memory-mapped. Use as a context manager."""

    def __init__(self, path: Path, mm: mmap.mmap | None, tensors: dict[str, SafeTensor]) -> None:
        self.path = path
        self._mmap = mm
        self.tensors = tensors
        self.metadata: dict[str, str] = {}

    @classmethod
    def open(cls, path: str | Path) -> SafetensorsFile:
        path = Path(path)
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(0)
            head = f.read(8)
            if len(head) < 8:
                raise CorruptModel(f"{path.name} is not a safetensors file (shorter than 8 bytes)")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER or 8 + n > size:
                raise CorruptModel(f"{path.name} is not a safetensors file (header length {n})")
            header = _parse_header(f.read(n), path)
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size > 0 else None
        tensors = _tensors(header, path, 8 + n, size)
        out = cls(path, mm, tensors)
        meta = header.get("__metadata__")
        out.metadata = {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}
        return out

    def raw(self, name: str) -> np.ndarray:
        """The tensor's bits, as stored (BF16 as uint16), shaped; a read-only view."""
        t = self.tensors[name]
        dtype = DTYPES.get(t.dtype)
        if dtype is None:
            raise CorruptModel(f"{self.path.name}: tensor {name} has unsupported dtype {t.dtype}")
        if t.nbytes == 0:
            return np.zeros(t.shape, dtype)
        assert self._mmap is not None
        return np.frombuffer(self._mmap, dtype, t.n_elements, t.start).reshape(t.shape)

    def to_float32(self, name: str) -> np.ndarray:
        """The tensor as a new float32 array."""
        return to_float32(self.raw(name), self.tensors[name].dtype)

    def release(self, name: str) -> None:
        """Drop the tensor's pages from this process's resident set (they stay on disk)."""
        t = self.tensors[name]
        if self._mmap is None or t.nbytes == 0:
            return
        start = t.start // PAGE * PAGE
        with contextlib.suppress(OSError, ValueError, AttributeError):
            self._mmap.madvise(mmap.MADV_DONTNEED, start, t.end - start)

    def close(self) -> None:
        if self._mmap is not None:
            with contextlib.suppress(BufferError):  # a view is still alive: the GC closes it
                self._mmap.close()
            self._mmap = None

    def __enter__(self) -> SafetensorsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensors)


def to_float32(raw: np.ndarray, dtype: str) -> np.ndarray:
    """Widen raw safetensors bits (`dtype` as named in the header) to float32."""
    if dtype == "BF16":
        wide = raw.astype(np.uint32)
        wide <<= np.uint32(16)
        return wide.view(np.float32)
    return raw.astype(np.float32)


def _parse_header(data: bytes, path: Path) -> dict[str, Any]:
    try:
        header = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptModel(f"{path.name}: safetensors header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise CorruptModel(f"{path.name}: safetensors header is not a JSON object")
    return header


def _tensors(header: dict[str, Any], path: Path, base: int, size: int) -> dict[str, SafeTensor]:
    out: dict[str, SafeTensor] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        t = _entry(name, entry, path, base)
        itemsize = DTYPES[t.dtype].itemsize if t.dtype in DTYPES else None
        if itemsize is not None and t.nbytes != t.n_elements * itemsize:
            raise CorruptModel(
                f"{path.name}: tensor {name} has {t.nbytes} bytes for shape {list(t.shape)} "
                f"of {t.dtype}"
            )
        if t.end > size:
            raise CorruptModel(
                f"{path.name} is truncated: tensor {name} ends at byte {t.end} of {size}; "
                "download it again"
            )
        out[name] = t
    return out


def _entry(name: str, entry: Any, path: Path, base: int) -> SafeTensor:
    try:
        dtype = str(entry["dtype"])
        shape = tuple(int(n) for n in entry["shape"])
        begin, end = (int(n) for n in entry["data_offsets"])
    except (KeyError, TypeError, ValueError):
        raise CorruptModel(f"{path.name}: bad header entry for tensor {name}") from None
    if begin < 0 or end < begin or any(n < 0 for n in shape):
        raise CorruptModel(f"{path.name}: bad offsets or shape for tensor {name}")
    return SafeTensor(name, dtype, shape, base + begin, base + end)
