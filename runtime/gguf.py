"""A lazy, memory-mapped GGUF reader.

The header is walked once to find where every key/value pair and tensor lives,
but arrays (a 262k-token vocabulary, its scores and merges) are decoded only
when asked for, so opening a large-vocabulary model costs milliseconds rather
than the seconds gguf-py's eager GGUFReader needs.

Tensor data is never copied here: `tensor_bytes` returns a view into the
memory map, and quants.py turns it into float32.
"""

from __future__ import annotations

import math
import mmap
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from corral.runtime.pages import weight_array
from corral.runtime.quants import QUANT_TYPES, Convert, QuantType, quant_type

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
MAX_ARRAY_DEPTH = 4  # arrays of arrays: none in real files; bounded, walked without recursion
MAX_DIMENSION = 1 << 62  # a dimension (ne) above this is no tensor a file could hold


class GGUFError(ValueError):
    """The file is not a GGUF file we can read; the message says which check failed."""


# GGUF metadata value types: id -> (name, numpy dtype or None for str/bool/array).
_SCALAR_FORMATS: dict[int, tuple[str, str]] = {
    0: ("uint8", "<B"),
    1: ("int8", "<b"),
    2: ("uint16", "<H"),
    3: ("int16", "<h"),
    4: ("uint32", "<I"),
    5: ("int32", "<i"),
    6: ("float32", "<f"),
    7: ("bool", "<?"),
    10: ("uint64", "<Q"),
    11: ("int64", "<q"),
    12: ("float64", "<d"),
}
_STRING = 8
_ARRAY = 9


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives in the file and how it is encoded."""

    name: str
    shape: tuple[int, ...]  # NumPy order: outermost first (GGUF stores ne reversed)
    qtype: QuantType
    offset: int  # absolute file offset of the first byte
    nbytes: int

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)


_U64 = struct.Struct("<Q")


@dataclass(frozen=True)
class _LazyArray:
    """An array value in the header, decoded on first access."""

    item_type: int
    count: int
    offset: int  # offset of the first item


class _Cursor:
    """Sequential little-endian reads over a buffer, with bounds checks."""

    def __init__(self, buf: memoryview, path: Path) -> None:
        self.buf = buf
        self.pos = 0
        self.path = path

    def take(self, n: int) -> memoryview:
        end = self.pos + n
        if n < 0 or end > len(self.buf):
            raise GGUFError(f"{self.path}: truncated GGUF header (needed {n} bytes at {self.pos})")
        view = self.buf[self.pos : end]
        self.pos = end
        return view

    def unpack(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        return struct.unpack_from(fmt, self.take(size))[0]

    def u32(self) -> int:
        return self.unpack("<I")

    def u64(self) -> int:
        return self.unpack("<Q")

    def string(self) -> str:
        n = self.u64()
        return bytes(self.take(n)).decode("utf-8", errors="replace")

    def skip_strings(self, count: int) -> None:
        buf, pos, size = self.buf, self.pos, len(self.buf)
        length = _U64.unpack_from
        for _ in range(count):
            if pos + 8 > size:
                raise GGUFError(f"{self.path}: truncated string array in GGUF header")
            pos += 8 + length(buf, pos)[0]
        if pos > size:
            raise GGUFError(f"{self.path}: truncated string array in GGUF header")
        self.pos = pos


class GGUFMetadata(Mapping[str, Any]):
    """Read-only mapping of GGUF key/value pairs; arrays decode on first access."""

    def __init__(self, raw: dict[str, Any], buf: memoryview, path: Path) -> None:
        self._raw = raw
        self._buf = buf
        self._path = path
        self._decoded: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        value = self._raw[key]
        if not isinstance(value, _LazyArray):
            return value
        if key not in self._decoded:
            self._decoded[key] = self._decode_array(value)
        return self._decoded[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)

    def __contains__(self, key: object) -> bool:
        return key in self._raw

    def array_length(self, key: str) -> int:
        """Length of an array value without decoding it."""
        value = self._raw[key]
        return value.count if isinstance(value, _LazyArray) else len(value)

    def is_array(self, key: str) -> bool:
        return isinstance(self._raw[key], _LazyArray | list | tuple)

    def _decode_array(self, arr: _LazyArray) -> list[Any] | np.ndarray:
        if arr.item_type == _STRING:
            out: list[str] = []
            buf, pos, append = self._buf, arr.offset, out.append
            length = _U64.unpack_from
            for _ in range(arr.count):
                (n,) = length(buf, pos)
                append(str(buf[pos + 8 : pos + 8 + n], "utf-8", "replace"))
                pos += 8 + n
            return out
        if arr.item_type in _SCALAR_FORMATS:
            dtype = np.dtype(_SCALAR_FORMATS[arr.item_type][1])
            # a copy, so no view into the memory map outlives close()
            return np.frombuffer(self._buf, dtype=dtype, count=arr.count, offset=arr.offset).copy()
        raise GGUFError(f"{self._path}: nested arrays in GGUF metadata are not supported")


class GGUFFile:
    """An open GGUF file: metadata, tensor table and memory-mapped data."""

    def __init__(self, path: Path, mm: mmap.mmap) -> None:
        self.path = path
        self._mmap = mm
        self._buf = memoryview(mm)
        self.version = 0
        self.metadata: GGUFMetadata
        self.tensors: dict[str, TensorInfo] = {}
        self._parse()

    @classmethod
    def open(cls, path: str | Path) -> GGUFFile:
        path = Path(path)
        try:
            with open(path, "rb") as f:
                size = f.seek(0, 2)
                if size < 24:
                    raise GGUFError(f"{path}: not a GGUF file (only {size} bytes)")
                mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as e:
            raise GGUFError(f"{path}: cannot open: {e.strerror or e}") from e
        return cls(path, mm)

    def _parse(self) -> None:
        cur = _Cursor(self._buf, self.path)
        magic = bytes(cur.take(4))
        if magic != GGUF_MAGIC:
            raise GGUFError(f"{self.path}: not a GGUF file (magic {magic!r}, expected b'GGUF')")
        self.version = cur.u32()
        if self.version not in (2, 3):
            raise GGUFError(f"{self.path}: unsupported GGUF version {self.version}")
        n_tensors, n_kv = cur.u64(), cur.u64()
        raw: dict[str, Any] = {}
        for _ in range(n_kv):
            key = cur.string()
            raw[key] = self._read_value(cur, cur.u32())
        self.metadata = GGUFMetadata(raw, self._buf, self.path)
        infos = [self._read_tensor_info(cur) for _ in range(n_tensors)]
        alignment = self._alignment(raw.get("general.alignment", DEFAULT_ALIGNMENT))
        data_start = -(-cur.pos // alignment) * alignment
        for name, shape, qtype, rel in infos:
            nbytes = self._nbytes(name, qtype, shape)
            info = TensorInfo(name, shape, qtype, data_start + rel, nbytes)
            if info.offset + info.nbytes > len(self._buf):
                raise GGUFError(
                    f"{self.path}: truncated: tensor {name!r} ends at byte "
                    f"{info.offset + info.nbytes}, file has {len(self._buf)}"
                )
            self.tensors[name] = info

    def _alignment(self, value: Any) -> int:
        """general.alignment: a power of two (a uint32 in the spec)."""
        if not isinstance(value, int) or value < 1 or value > 1 << 31 or value & (value - 1):
            raise GGUFError(f"{self.path}: bad general.alignment {str(value)[:40]!r}")
        return value

    def _nbytes(self, name: str, qtype: QuantType, shape: tuple[int, ...]) -> int:
        try:
            return qtype.nbytes(shape)
        except ValueError as e:
            raise GGUFError(f"{self.path}: tensor {name!r}: {e}") from None

    def _read_value(self, cur: _Cursor, vtype: int) -> Any:
        if vtype in _SCALAR_FORMATS:
            return cur.unpack(_SCALAR_FORMATS[vtype][1])
        if vtype == _STRING:
            return cur.string()
        if vtype == _ARRAY:
            item_type, count = cur.u32(), cur.u64()
            arr = _LazyArray(item_type, count, cur.pos)
            self._skip_items(cur, item_type, count)
            return arr
        raise GGUFError(f"{self.path}: unknown GGUF metadata value type {vtype}")

    def _skip_items(self, cur: _Cursor, item_type: int, count: int) -> None:
        """Move past `count` array items. Arrays of arrays (which `_decode_array` refuses)
        are walked with a stack of (item type, items left), to MAX_ARRAY_DEPTH levels."""
        stack = [(item_type, count)]
        while stack:
            item_type, count = stack.pop()
            if item_type == _STRING:
                cur.skip_strings(count)
            elif item_type in _SCALAR_FORMATS:
                cur.take(count * struct.calcsize(_SCALAR_FORMATS[item_type][1]))
            elif item_type != _ARRAY:
                if count:
                    raise GGUFError(f"{self.path}: unknown GGUF array item type {item_type}")
            elif count:
                if len(stack) >= MAX_ARRAY_DEPTH:
                    raise GGUFError(f"{self.path}: GGUF arrays nested too deeply")
                stack.append((_ARRAY, count - 1))
                stack.append((cur.u32(), cur.u64()))

    def _read_tensor_info(self, cur: _Cursor) -> tuple[str, tuple[int, ...], QuantType, int]:
        name = cur.string()
        n_dims = cur.u32()
        if n_dims > 4:
            raise GGUFError(f"{self.path}: tensor {name!r} has {n_dims} dimensions (max 4)")
        ne = [cur.u64() for _ in range(n_dims)]
        if any(n > MAX_DIMENSION for n in ne):
            raise GGUFError(f"{self.path}: tensor {name!r} has a dimension of {max(ne)}")
        type_id = cur.u32()
        if type_id not in QUANT_TYPES:
            raise GGUFError(
                f"{self.path}: tensor {name!r} uses GGML type id {type_id}, "
                "which corral does not support"
            )
        return name, tuple(reversed(ne)), quant_type(type_id), cur.u64()

    def tensor_bytes(self, name: str) -> np.ndarray:
        """The raw encoded bytes of a tensor: a uint8 view into the memory map."""
        info = self.tensors[name]
        return np.frombuffer(self._buf, dtype=np.uint8, count=info.nbytes, offset=info.offset)

    def load_tensor(self, name: str, dtype: np.dtype | type = np.float32) -> np.ndarray:
        """Dequantize a tensor to a new array of `dtype`, in NumPy shape order."""
        values = weight_array(self.tensors[name].shape)
        self.load_tensor_into(name, values)
        return values.astype(dtype, copy=False)

    def load_tensor_into(self, name: str, out: np.ndarray, convert: Convert | None = None) -> None:
        """Dequantize a tensor into `out` (float32, C-contiguous, as many values; or what
        `convert` writes from float32 chunks), then drop its pages of the file from this
        process's memory: a model loads with its weights resident, not its file as well."""
        info = self.tensors[name]
        info.qtype.dequantize_into(self.tensor_bytes(name), out, convert)
        self._forget_pages(info.offset, info.nbytes)

    def _forget_pages(self, offset: int, nbytes: int) -> None:
        """madvise(DONTNEED) the whole pages inside [offset, offset + nbytes): clean file
        pages, read back from the page cache should anything touch them again."""
        start = -(-offset // mmap.PAGESIZE) * mmap.PAGESIZE
        end = (offset + nbytes) // mmap.PAGESIZE * mmap.PAGESIZE
        if end > start and hasattr(mmap, "MADV_DONTNEED"):
            self._mmap.madvise(mmap.MADV_DONTNEED, start, end - start)

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    def close(self) -> None:
        """Unmap the file; if a caller still holds a `tensor_bytes` view, the
        mapping stays alive until that view is garbage collected."""
        self.metadata = GGUFMetadata({}, memoryview(b""), self.path)
        try:
            self._buf.release()
            self._mmap.close()
        except BufferError:
            pass

    def __enter__(self) -> GGUFFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
