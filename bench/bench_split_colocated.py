"""Batched decoding when the OS puts both halves of the split on one core.

    python bench/bench_split_colocated.py [model.gguf] [--rows 4] [--steps 12]

The split helper (runtime/split.py) and the main process spin while they wait for
each other. When another program takes a core, the OS may run both on the other
one; this prints the median time of a batched step with the two processes free to
run on any core, then with both pinned to core 0 (as the OS might put them), then
free again. Yielding the core while spinning (runtime/split_protocol.py) keeps the
pinned step near the sum of both halves' work instead of a time slice per hand-over.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

from bench_common import source_model
from corral.runtime.engine import Engine
from corral.runtime.split import SplitLinear


def step_ms(engine: Engine, rows: int, steps: int) -> float:
    """Median ms of a `rows`-row decoding step (each session at 5 tokens)."""
    model = engine.model
    caches = [s.cache for s in engine.new_sessions(rows)]
    for cache in caches:
        model.forward(np.arange(1, 6), cache)
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        model.forward_batch(np.full(rows, 7), caches)
        times.append(time.perf_counter() - started)
        for cache in caches:
            cache.length -= 1
    return statistics.median(times) * 1e3


def pin(pids: list[int], cpus: set[int]) -> None:
    for pid in pids:
        os.sched_setaffinity(pid, cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "model", nargs="?", default="smollm2", help="a GGUF file, or smollm2, qwen2.5-coder, gemma3"
    )
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    args.model = str(source_model(args.model))
    engine = Engine.load(args.model, num_ctx=64, split=True)
    split = getattr(engine.model.linear, "__self__", None)
    if not isinstance(split, SplitLinear):
        sys.exit("no split helper here (it needs fork() on x86-64)")
    everyone = [int(t) for t in os.listdir("/proc/self/task")] + [split.pid]
    free = os.sched_getaffinity(0)
    print(f"model: {args.model}\n{args.rows}-row step, median of {args.steps}")
    print(f"free:          {step_ms(engine, args.rows, args.steps):7.1f} ms")
    pin(everyone, {min(free)})
    print(f"on one core:   {step_ms(engine, args.rows, args.steps):7.1f} ms")
    pin(everyone, free)
    print(f"free again:    {step_ms(engine, args.rows, args.steps):7.1f} ms")


if __name__ == "__main__":
    main()
