"""The weight products alone: bfloat16 kernels against float32 BLAS, by rows of x.

    python bench/bench_bf16.py                 # SmolLM2-135M's matrix shapes
    python bench/bench_bf16.py --runs 9 --rows 1 2 4 8

Random matrices of one decoding step's shapes (SmolLM2-135M: 30 layers of fused QKV,
attention output, fused gate/up and down, then the 49152-token output matrix), each
multiplied once by x of R rows; prints the median time of a whole step's products
for float32 weights through NumPy/OpenBLAS (`ops.linear`, one process) and for the same
weights rounded to bfloat16 (`bf16.linear`), and the rate each reads its weights.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from corral.runtime.arch import ops
from corral.runtime.bf16 import Bf16Matrix

LAYER_SHAPES = [(960, 576), (576, 576), (3072, 576), (576, 1536)]  # (out, in)
N_LAYERS = 30
OUTPUT_SHAPE = (49152, 576)


def step_time(products: list[tuple[np.ndarray, object]], runs: int) -> float:
    """Median seconds for one pass over every (x, weight) product."""
    times = []
    for _ in range(runs + 1):  # the first pass warms up threads and caches
        started = time.perf_counter()
        for x, weight in products:
            ops.linear(x, weight)  # type: ignore[arg-type]
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    shapes = LAYER_SHAPES * N_LAYERS + [OUTPUT_SHAPE]
    float32 = [rng.standard_normal(s, dtype=np.float32) * 0.05 for s in shapes]
    bf16 = [Bf16Matrix.from_float32(w) for w in float32]
    kinds: dict[str, tuple[list, Callable[[object], int]]] = {
        "float32": (float32, lambda w: w.nbytes),  # type: ignore[attr-defined]
        "bfloat16": (bf16, lambda w: w.nbytes),  # type: ignore[attr-defined]
    }
    print(f"one step's products of SmolLM2-135M's shapes, median of {args.runs}")
    print(f"{'rows':>4} {'weights':>9} {'MB':>6} {'ms':>7} {'GB/s':>6}")
    for rows in args.rows:
        for name, (weights, size) in kinds.items():
            products = [
                (rng.standard_normal((rows, w.shape[1]), dtype=np.float32), w) for w in weights
            ]
            seconds = step_time(products, args.runs)
            nbytes = sum(size(w) for w in weights)
            print(
                f"{rows:>4} {name:>9} {nbytes / 1e6:>6.0f} {seconds * 1e3:>7.1f} "
                f"{nbytes / seconds / 1e9:>6.1f}"
            )


if __name__ == "__main__":
    main()
