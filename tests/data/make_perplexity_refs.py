"""Regenerate tests/data/perplexity_refs.json: llama-perplexity over the GPL-3 text.

Needs `llama-perplexity` and `llama-quantize` built from the llama-cpp-python 0.3.36
sdist's vendor/llama.cpp (see ASSETS.md; built out of the repository, e.g. in /tmp):

    cmake <sdist>/vendor/llama.cpp -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
        -DCMAKE_C_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16' \
        -DCMAKE_CXX_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16'
    cmake --build . --target llama-perplexity llama-quantize -j2
    LLAMA_PERPLEXITY=$PWD/bin/llama-perplexity LLAMA_QUANTIZE=$PWD/bin/llama-quantize \
        python tests/data/make_perplexity_refs.py [MODEL ...] [--part models|quantize]

Run from the repository root; 20-30 minutes on two busy cores (fetches the models on
first use). Only the models named on the command line (default: all) and the --part
named (default: both) are redone; the rest of the file is kept.

Per model (SmolLM2-135M Q4_1, Qwen2.5-Coder-0.5B Q4_K_M, gemma-3-270m Q4_K_M), with
`-f /usr/share/common-licenses/GPL-3 -c 256 -t 2 --chunks 16`:
- "default": the shipped GGUF, llama.cpp's defaults (f16 KV cache, flash attention
  auto, 8-bit activations in quantized matmuls);
- "exact": an all-F32 copy of the same GGUF (gguf-py dequantize, written into the test
  cache by refs_common.f32_copy) with `-ctk f32 -ctv f32 -fa off`: float math, the
  closest reference for a float32 runtime.
Each records the command, the final "PPL = x +/- u" and the running estimate printed
after every chunk ("[i]x"), so a test may score fewer chunks and compare with [i].

"quantize" (issue 4): the all-F32 copies of SmolLM2 and Qwen2.5-Coder as sources, each
quantized to Q4_K_M by `llama-quantize SRC DST Q4_K_M 2` and by corral's
`quantize_gguf(SRC, DST, "Q4_K_M")`; both results scored by llama-perplexity (default
settings) and by corral (runtime/perplexity.py); llama-quantize's output also by
llama-perplexity's float math ("llama_perplexity_exact": its all-F32 copy, written with
refs_common.write_f32_copy, with the "exact" flags above), the reference for a float32
runtime scoring a Q4_K_M file. Also recorded: how many tensors the two quantizers wrote
byte for byte alike. corral's figures ("corral") are what corral
gave when this file was generated, for the record; tests recompute their own.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/
import assets
from corral.runtime.engine import Engine
from corral.runtime.gguf import GGUFFile
from corral.runtime.perplexity import text_perplexity
from corral.runtime.quantize import quantize_gguf
from refs_common import MODELS, dumps, f32_copy, sha256, write_f32_copy

log = logging.getLogger("make_perplexity_refs")

OUT = Path(__file__).with_name("perplexity_refs.json")
COMMAND = (
    "LLAMA_PERPLEXITY=.../llama-perplexity LLAMA_QUANTIZE=.../llama-quantize "
    "python tests/data/make_perplexity_refs.py"
)
N_CTX = 256
N_CHUNKS = 16
THREADS = 2
MIX = "Q4_K_M"
QUANTIZE_MODELS = ("smollm2", "qwen25_coder")
EXACT_FLAGS = ("-ctk", "f32", "-ctv", "f32", "-fa", "off")
RUNNING = re.compile(r"\[(\d+)\](\d+\.\d+),")
FINAL = re.compile(r"Final estimate: PPL = (\d+\.\d+) \+/- (\d+\.\d+)")


def tool(env: str) -> Path:
    path = os.environ.get(env)
    if not path or not os.access(path, os.X_OK):
        sys.exit(f"set {env} to the llama.cpp binary (see this script's docstring)")
    return Path(path)


def llama_version(binary: Path) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    lines = (out.stdout + out.stderr).strip().splitlines()
    return next(line for line in lines if line.startswith("version:"))


def llama_perplexity(binary: Path, model: Path, text: Path, *flags: str) -> dict[str, Any]:
    """Run llama-perplexity; the command (model as a file name) and its figures."""
    args = ["-m", str(model), "-f", str(text), "-c", str(N_CTX), "-t", str(THREADS)]
    args += ["--chunks", str(N_CHUNKS), *flags]
    log.info("llama-perplexity %s", " ".join(args))
    proc = subprocess.run([binary, *args], capture_output=True, text=True, check=True)
    final = FINAL.search(proc.stderr + proc.stdout)
    running = [(int(i), float(x)) for i, x in RUNNING.findall(proc.stdout)]
    if final is None or [i for i, _ in running] != list(range(1, N_CHUNKS + 1)):
        raise RuntimeError(f"unexpected llama-perplexity output:\n{proc.stdout}{proc.stderr}")
    shown = ["llama-perplexity", *args]
    shown[shown.index(str(model))] = model.name
    return {
        "command": " ".join(shown),
        "ppl": float(final.group(1)),
        "uncertainty": float(final.group(2)),
        "running": [x for _, x in running],
    }


def corral_perplexity(model: Path, text: str) -> dict[str, Any]:
    result = text_perplexity(Engine.load(model), text, N_CTX, N_CHUNKS)
    return {"ppl": round(result.ppl, 4), "uncertainty": round(result.uncertainty, 5)}


def model_section(name: str, binary: Path, text: str) -> dict[str, Any]:
    path, copy = MODELS[name].fetch(), f32_copy(name)
    return {
        "model": {
            "file": path.name,
            "requirement": MODELS[name].requirement,
            "sha256": sha256(path),
        },
        "default": llama_perplexity(binary, path, assets.GPL3_PATH),
        "exact": {
            "model": {"file": copy.name, "sha256": sha256(copy)},
            **llama_perplexity(binary, copy, assets.GPL3_PATH, *EXACT_FLAGS),
        },
        "corral": corral_perplexity(path, text),
    }


def tensor_types(path: Path) -> dict[str, int]:
    with GGUFFile.open(path) as f:
        return dict(sorted(Counter(t.qtype.name for t in f.tensors.values()).items()))


def identical_tensors(a: Path, b: Path) -> list[int]:
    """[tensors with the same bytes in both files, tensors]."""
    with GGUFFile.open(a) as fa, GGUFFile.open(b) as fb:
        same = sum(np.array_equal(fa.tensor_bytes(n), fb.tensor_bytes(n)) for n in fa.tensors)
        return [int(same), len(fa.tensors)]


def quantize_section(name: str, tools: dict[str, Path], text: str, tmp: Path) -> dict[str, Any]:
    source = f32_copy(name)
    theirs, ours = tmp / f"llama-quantize.{MIX}.gguf", tmp / f"corral.{MIX}.gguf"
    cmd = [tools["quantize"], source, theirs, MIX, str(THREADS)]
    log.info("%s", " ".join(map(str, cmd)))
    subprocess.run(cmd, capture_output=True, check=True)
    quantize_gguf(source, ours, MIX)
    section: dict[str, Any] = {
        "source": {"file": source.name, "sha256": sha256(source)},
        "identical_tensors": identical_tensors(ours, theirs),
    }
    commands = {
        "llama_quantize": f"llama-quantize {source.name} {theirs.name} {MIX} {THREADS}",
        "corral": f"quantize_gguf({source.name!r}, {ours.name!r}, {MIX!r})",
    }
    for key, path in (("llama_quantize", theirs), ("corral", ours)):
        section[key] = {
            "command": commands[key],
            "sha256": sha256(path),
            "types": tensor_types(path),
            "llama_perplexity": llama_perplexity(tools["perplexity"], path, assets.GPL3_PATH),
            "corral": corral_perplexity(path, text),
        }
    copy = tmp / f"llama-quantize.{MIX}.F32.gguf"
    write_f32_copy(theirs, copy)
    section["llama_quantize"]["llama_perplexity_exact"] = {
        "model": {"file": copy.name, "sha256": sha256(copy)},
        **llama_perplexity(tools["perplexity"], copy, assets.GPL3_PATH, *EXACT_FLAGS),
    }
    for path in (theirs, ours, copy):
        path.unlink()
    return section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="*", help=f"some of {', '.join(MODELS)} (default: all)")
    parser.add_argument("--part", choices=["models", "quantize"], help="only this section")
    args = parser.parse_args()
    if unknown := [n for n in args.models if n not in MODELS]:
        parser.error(f"unknown model(s) {unknown}; known: {', '.join(MODELS)}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    tools = {"perplexity": tool("LLAMA_PERPLEXITY")}
    if args.part != "models":
        tools["quantize"] = tool("LLAMA_QUANTIZE")
    text_bytes = assets.GPL3_PATH.read_bytes()
    text = text_bytes.decode("utf-8")
    old = json.loads(OUT.read_text()) if OUT.is_file() else {"models": {}, "quantize": {}}
    models = dict(old["models"])
    for name in args.models or list(MODELS):
        if args.part != "quantize":
            models[name] = model_section(name, tools["perplexity"], text)
    quantize = dict(old.get("quantize", {}))
    if args.part != "models":
        with tempfile.TemporaryDirectory() as tmp:
            for name in QUANTIZE_MODELS:
                if not args.models or name in args.models:
                    quantize[name] = quantize_section(name, tools, text, Path(tmp))
    doc = {
        "command": COMMAND,
        "llama_cpp": {
            "source": f"vendor/llama.cpp of the {assets.LLAMA_CPP_REQUIREMENT} sdist "
            f"(sha256 {assets.LLAMA_CPP_SDIST_SHA256})",
            "version": llama_version(tools["perplexity"]),
            "build": "cmake -DGGML_NATIVE=ON -DLLAMA_CURL=OFF, C/CXX flags "
            "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16 (Release)",
        },
        "text": {
            "path": str(assets.GPL3_PATH),
            "sha256": hashlib.sha256(text_bytes).hexdigest(),
        },
        "n_ctx": N_CTX,
        "n_chunks": N_CHUNKS,
        "threads": THREADS,
        "models": {name: models[name] for name in MODELS if name in models},
        "quantize": {name: quantize[name] for name in QUANTIZE_MODELS if name in quantize},
    }
    OUT.write_text(dumps(doc) + "\n", encoding="utf-8")
    log.info("wrote %s", OUT)


if __name__ == "__main__":
    main()
