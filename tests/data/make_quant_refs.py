"""Regenerate tests/data/quant_blocks.npz and tests/data/quant_plans.json from llama.cpp.

Needs a `llama-quantize` built from the llama-cpp-python 0.3.36 sdist's vendor/llama.cpp
(see ASSETS.md; built out of the repository, e.g. in /tmp):

    cmake <sdist>/vendor/llama.cpp -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
        -DCMAKE_C_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16' \
        -DCMAKE_CXX_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16'
    cmake --build . --target llama-quantize -j2
    LLAMA_QUANTIZE=$PWD/bin/llama-quantize python tests/data/make_quant_refs.py

quant_blocks.npz: llama.cpp's own bytes for a few rows of awkward values (all-zero and
signed-zero blocks, one-signed blocks, huge and tiny magnitudes, constant blocks,
heavy tails), from `ggml_quantize_chunk` in the libggml-base.so beside llama-quantize,
the function llama-quantize calls (no importance matrix: the reference quantizers).

quant_plans.json: the tensor types llama-quantize chose, per mix (and with --pure),
for four models converted to F16 with gguf-py (tiny: F32 as tests/tiny.py writes it):
SmolLM2-135M, Qwen2.5-Coder-0.5B, gemma-3-270m and a 16-layer tiny llama with
256-wide rows. Takes about ten minutes on two cores; big files go to a temporary dir.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import gguf
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import assets
from corral.runtime.gguf import GGUFFile
from tiny import write_tiny_llama

HERE = Path(__file__).resolve().parent
TYPES = {"Q4_0": 2, "Q4_1": 3, "Q5_0": 6, "Q5_1": 7, "Q8_0": 8}
TYPES |= {"Q2_K": 10, "Q3_K": 11, "Q4_K": 12, "Q5_K": 13, "Q6_K": 14}
MIXES = ["Q4_K_M", "Q4_K_S", "Q5_K_M", "Q5_K_S", "Q3_K_M", "Q3_K_S", "Q3_K_L", "Q2_K"]
MIXES += ["Q6_K", "Q8_0", "Q4_0", "Q5_1", "F16", "Q4_K_M --pure", "Q6_K --pure"]


def awkward_rows(rng: np.random.Generator) -> np.ndarray:
    """(16, 512) float32: two 256-value super-blocks (sixteen 32-value blocks) per row."""
    n = (16, 512)
    rows = [
        np.zeros(512),
        np.where(rng.random(512) < 0.5, -0.0, 0.0),  # signed zeros only
        np.where(rng.random(512) < 0.9, -0.0, rng.standard_normal(512)),  # sparse
        -np.abs(rng.standard_normal(512)),
        np.abs(rng.standard_normal(512)) + 0.5,
        np.full(512, 3.0),
        rng.standard_normal(512) * 1e-30,
        rng.standard_normal(512) * 1e-7,
        rng.standard_normal(512) * 60000.0,
        rng.standard_t(2, 512) * 0.02,
        np.float16(rng.standard_normal(512) * 0.05),
        rng.integers(-4, 4, 512) * 0.25,
        rng.exponential(1.0, 512),
        rng.standard_normal(512) * (rng.random(512) < 0.2),
        rng.standard_normal(512),
        rng.standard_normal(512) * np.repeat(rng.uniform(0, 2, 16), 32),
    ]
    return np.stack(rows).astype(np.float32).reshape(n)


def ggml_quantize(lib: ctypes.CDLL, x: np.ndarray, type_id: int, row_bytes: int) -> np.ndarray:
    out = np.zeros((x.shape[0], row_bytes), dtype=np.uint8)
    lib.ggml_quantize_chunk(
        type_id, x.ctypes.data, out.ctypes.data, 0, x.shape[0], x.shape[1], None
    )
    return out


def make_blocks(build: Path) -> None:
    lib = ctypes.CDLL(str(build / "libggml-base.so"))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, *[ctypes.c_void_p] * 2]
    lib.ggml_quantize_chunk.argtypes += [ctypes.c_int64] * 3 + [ctypes.c_void_p]
    x = awkward_rows(np.random.default_rng(20240601))
    arrays = {"x": x}
    for name, type_id in TYPES.items():
        block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[name]]
        arrays[name] = ggml_quantize(lib, x, type_id, x.shape[1] // block * size)
    np.savez_compressed(HERE / "quant_blocks.npz", **arrays)


def write_f16_copy(src: Path, dest: Path) -> None:
    """`src` dequantized, 2-D+ tensors as F16 and the rest F32 (as convert_hf_to_gguf)."""
    reader = gguf.GGUFReader(src)
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    writer = gguf.GGUFWriter(dest, arch=arch)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        value = field.contents()
        if field.name == gguf.Keys.General.FILE_TYPE:
            value = int(gguf.LlamaFileType.MOSTLY_F16)
        writer.add_key_value(field.name, value, kind, sub_type=sub)
    for t in reader.tensors:
        shape = tuple(int(n) for n in reversed(t.shape))
        dtype = np.float16 if len(shape) > 1 else np.float32
        writer.add_tensor_info(
            t.name, shape, np.dtype(dtype), np.dtype(dtype).itemsize * t.n_elements
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for t in reader.tensors:
        data = gguf.quants.dequantize(t.data, t.tensor_type)
        shape = tuple(int(n) for n in reversed(t.shape))
        writer.write_tensor_data(
            data.reshape(shape).astype(np.float16 if len(shape) > 1 else np.float32)
        )
    writer.close()


def model_record(path: Path, quantize: Path, tmp: Path) -> dict:
    with GGUFFile.open(path) as f:
        arch = f.metadata["general.architecture"]
        hparams = {
            key: int(np.asarray(f.metadata[f"{arch}.{key}"]).reshape(-1)[0])
            for key in (
                "block_count",
                "attention.head_count",
                "attention.head_count_kv",
                "expert_count",
            )
            if f"{arch}.{key}" in f.metadata
        }
        tensors = [
            f"{t.name} {','.join(map(str, t.shape))} {t.qtype.name}" for t in f.tensors.values()
        ]
    plans = {}
    for mix in MIXES:
        name, *flags = mix.split()
        out = tmp / "out.gguf"
        cmd = [str(quantize), *flags, str(path), str(out), name, "2"]
        subprocess.run(cmd, check=True, capture_output=True)
        with GGUFFile.open(out) as q:
            plans[mix] = " ".join(q.tensors[t.split()[0]].qtype.name for t in tensors)
        out.unlink()
        print(f"  {mix}", flush=True)
    return {"arch": arch, "hparams": hparams, "tensors": tensors, "plans": plans}


def make_plans(quantize: Path) -> None:
    models = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        tiny = write_tiny_llama(
            tmp / "tiny.gguf", d_model=256, n_layers=16, n_heads=8, n_kv_heads=2, d_ff=512
        )
        sources = {"tiny-llama-16": tiny}
        for key, fetch in (
            ("smollm2-135m", assets.smollm2_gguf),
            ("qwen2.5-coder-0.5b", assets.qwen25_coder_gguf),
            ("gemma3-270m", assets.gemma3_gguf),
        ):
            sources[key] = tmp / f"{key}.F16.gguf"
            write_f16_copy(fetch(), sources[key])
        for key, path in sources.items():
            print(key, flush=True)
            models[key] = model_record(path, quantize, tmp)
            if key != "tiny-llama-16":
                path.unlink()
    doc = {
        "about": "tensor types chosen by llama-quantize (llama-cpp-python 0.3.36 vendor/llama.cpp)",
        "command": "llama-quantize [--pure] MODEL.F16.gguf OUT.gguf MIX 2",
        "generator": "LLAMA_QUANTIZE=... python tests/data/make_quant_refs.py",
        "models": models,
    }
    (HERE / "quant_plans.json").write_text(json.dumps(doc, indent=1) + "\n")


def main() -> None:
    quantize = Path(os.environ["LLAMA_QUANTIZE"])
    make_blocks(quantize.parent)
    if "--blocks-only" not in sys.argv:
        make_plans(quantize)


if __name__ == "__main__":
    main()
