"""Where a decoding step's time goes: the weight products against everything else.

    python bench/bench_step.py                  # SmolLM2-135M, 1 and 4 streams
    python bench/bench_step.py gemma3 --streams 1 2 4 --runs 5

Times every call of the model's `linear` (the weight products; for float32 weights
with 2 or more streams this includes waiting for the split helper's half) inside
`Engine.step`, and prints per step: the whole step, the products, the rate at which
they read the weights (bfloat16 for a quantized model, runtime/bf16.py), and the rest
(norms, RoPE, attention, sampling, bookkeeping). Medians of `--runs` rounds, each
decoding `--tokens` tokens per stream for every stream count in turn.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
from bench_batch import NoEndTokenizer, prefilled_streams

from bench_common import source_model
from corral.runtime.engine import Engine


class TimedLinear:
    """The model's `linear`, adding up the time spent in it."""

    def __init__(self, linear: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> None:
        self.linear = linear
        self.seconds = 0.0

    def __call__(self, x: np.ndarray, weight: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        try:
            return self.linear(x, weight)
        finally:
            self.seconds += time.perf_counter() - started


def decode(engine: Engine, timed: TimedLinear, streams: int, n_tokens: int) -> tuple[float, float]:
    """(seconds per step, seconds in products per step) over `n_tokens` batched steps."""
    gens = prefilled_streams(engine, streams, n_tokens)
    timed.seconds, steps = 0.0, 0
    started = time.perf_counter()
    while any(g.next_token is not None for g in gens):
        engine.step(gens)
        steps += 1
    return (time.perf_counter() - started) / steps, timed.seconds / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="smollm2")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    path = source_model(args.model)
    engine = Engine.load(path, num_ctx=512)
    engine.tokenizer = NoEndTokenizer(engine.tokenizer)
    model = engine.model
    timed = TimedLinear(model.linear)
    model.linear = timed
    weight_bytes = sum(m.nbytes for m in model.matrices())
    decode(engine, timed, 1, 4)  # warm up BLAS threads and page in the weights
    results: dict[int, list[tuple[float, float]]] = {n: [] for n in args.streams}
    for _ in range(args.runs):
        for n in args.streams:
            results[n].append(decode(engine, timed, n, args.tokens))
    print(f"model: {path}\nweights read per step: {weight_bytes / 1e6:.0f} MB")
    print(f"median of {args.runs} rounds of {args.tokens} steps; ms per step")
    print(f"{'streams':>7} {'step':>7} {'products':>9} {'GB/s':>6} {'rest':>6}")
    for n, runs in results.items():
        step = statistics.median(s for s, _ in runs)
        products = statistics.median(p for _, p in runs)
        rest = statistics.median(s - p for s, p in runs)
        rate = weight_bytes / products / 1e9
        print(f"{n:7d} {step * 1e3:7.1f} {products * 1e3:9.1f} {rate:6.1f} {rest * 1e3:6.1f}")


if __name__ == "__main__":
    main()
