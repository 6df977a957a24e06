"""The GGUF reader against gguf-py (the reference reader and writer)."""

from __future__ import annotations

import struct
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf.quants import dequantize, quantize

from corral.runtime.gguf import GGUFError, GGUFFile
from corral.runtime.quants import QUANT_TYPES_BY_NAME, UnsupportedQuantType
from tiny import tiny_vocab, write_tiny_llama

ROUND_TRIP_TYPES = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"]


@pytest.mark.parametrize("type_name", ROUND_TRIP_TYPES)
def test_dequantize_matches_gguf_py(type_name: str) -> None:
    qtype = gguf.GGMLQuantizationType[type_name]
    rng = np.random.default_rng(1)
    values = (rng.standard_normal((8, 256)) * rng.uniform(0.01, 3, (8, 1))).astype(np.float32)
    raw = quantize(values, qtype)  # gguf-py's encoding
    expected = dequantize(raw, qtype).astype(np.float32)
    ours = QUANT_TYPES_BY_NAME[type_name].dequantize(raw.reshape(-1).view(np.uint8), (8, 256))
    np.testing.assert_array_equal(ours, expected)


def test_metadata_and_tensors(tmp_path: Path) -> None:
    path = write_tiny_llama(tmp_path / "tiny.gguf", weight_type="Q8_0")
    reference = gguf.GGUFReader(path)
    with GGUFFile.open(path) as f:
        assert f.metadata["general.architecture"] == "llama"
        assert f.metadata["llama.block_count"] == 2
        tokens, types, merges = tiny_vocab()
        assert f.metadata["tokenizer.ggml.tokens"] == tokens
        assert list(f.metadata["tokenizer.ggml.token_type"]) == types
        assert f.metadata["tokenizer.ggml.merges"] == merges
        assert set(f.tensors) == {t.name for t in reference.tensors}
        for t in reference.tensors:
            ours = f.load_tensor(t.name)
            np.testing.assert_array_equal(ours, dequantize(t.data, t.tensor_type))


def test_not_a_gguf(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(GGUFError, match="not a GGUF file"):
        GGUFFile.open(bad)


def test_tiny_file_is_not_gguf(tmp_path: Path) -> None:
    bad = tmp_path / "empty.gguf"
    bad.write_bytes(b"GGUF")
    with pytest.raises(GGUFError, match="only 4 bytes"):
        GGUFFile.open(bad)


@pytest.mark.parametrize("keep", [0.3, 0.9, 0.999])
def test_truncated_file(tmp_path: Path, keep: float) -> None:
    path = write_tiny_llama(tmp_path / "tiny.gguf")
    data = path.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(GGUFError, match="truncated"):
        GGUFFile.open(cut)


def _hostile_gguf(kvs: list[bytes], tensors: list[bytes] = ()) -> bytes:
    """A GGUF v3 header of raw key/value pairs and tensor infos, then 4 KiB of zeros."""
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs))
    return head + b"".join(kvs) + b"".join(tensors) + bytes(4096)


def _text(value: bytes) -> bytes:
    return struct.pack("<Q", len(value)) + value


def _key(name: str, vtype: int, value: bytes) -> bytes:
    return _text(name.encode()) + struct.pack("<I", vtype) + value


def _tensor(dims: list[int]) -> bytes:
    ne = b"".join(struct.pack("<Q", n) for n in dims)
    return _text(b"w") + struct.pack("<I", len(dims)) + ne + struct.pack("<IQ", 0, 0)


ARCH = _key("general.architecture", 8, _text(b"llama"))
HOSTILE_HEADERS = {
    "alignment 0": ([ARCH, _key("general.alignment", 4, struct.pack("<I", 0))], []),
    "alignment 3": ([ARCH, _key("general.alignment", 4, struct.pack("<I", 3))], []),
    "alignment text": ([ARCH, _key("general.alignment", 8, _text(b"x"))], []),
    "alignment array": ([ARCH, _key("general.alignment", 9, struct.pack("<IQI", 4, 1, 32))], []),
    "arrays 5000 deep": (
        [ARCH, _key("k", 9, struct.pack("<IQ", 9, 1) * 5000 + struct.pack("<IQ", 4, 0))],
        [],
    ),
    "elements wrap to 0 in int64": ([ARCH], [_tensor([1 << 32, 1 << 32])]),
    "elements wrap negative": ([ARCH], [_tensor([1, (1 << 63) + 32])]),
}


@pytest.mark.parametrize("case", HOSTILE_HEADERS)
def test_hostile_header_is_a_gguf_error(tmp_path: Path, case: str) -> None:
    """Each once crashed the reader (ZeroDivisionError, TypeError, RecursionError: a 500)
    or was accepted with a tensor of 0 or negative bytes that views the whole file."""
    path = tmp_path / "hostile.gguf"
    path.write_bytes(_hostile_gguf(*HOSTILE_HEADERS[case]))
    with pytest.raises(GGUFError):
        GGUFFile.open(path).close()


def test_nested_arrays_are_skipped_and_refused_when_read(tmp_path: Path) -> None:
    nested = struct.pack("<IQ", 9, 2) + struct.pack("<IQI", 4, 1, 7) + struct.pack("<IQ", 8, 0)
    path = tmp_path / "nested.gguf"
    path.write_bytes(_hostile_gguf([ARCH, _key("k", 9, nested)]))
    with GGUFFile.open(path) as f:
        assert f.metadata["general.architecture"] == "llama"
        assert f.metadata.array_length("k") == 2
        with pytest.raises(GGUFError, match="nested arrays"):
            f.metadata["k"]


def test_unsupported_type_is_named() -> None:
    with pytest.raises(UnsupportedQuantType, match="Q8_1"):
        QUANT_TYPES_BY_NAME["Q8_1"].dequantize(np.zeros(36, np.uint8), (32,))


@pytest.mark.slow
def test_real_model_matches_gguf_py(smollm2_path: Path) -> None:
    reference = gguf.GGUFReader(smollm2_path)
    with GGUFFile.open(smollm2_path) as f:
        assert f.metadata.array_length("tokenizer.ggml.tokens") == 49152
        for t in reference.tensors[:12]:
            np.testing.assert_array_equal(f.load_tensor(t.name), dequantize(t.data, t.tensor_type))
