"""Perplexity benchmark: corral beside llama-perplexity on the same GGUF and text.

    python bench/bench_perplexity.py                            # the three test models
    python bench/bench_perplexity.py --models smollm2 --chunks 16 --ctx 256
    LLAMA_PERPLEXITY=/path/to/llama-perplexity python bench/bench_perplexity.py [--batch 256]

The text is the GPL-3 (/usr/share/common-licenses/GPL-3, or --text FILE), scored as
`llama-perplexity -f FILE -c CTX --chunks N -t 2` scores it (runtime/perplexity.py).
Printed per model: the perplexity of each, corral's difference from llama.cpp, and
scoring speed in tokens evaluated per second (N * CTX tokens; load and tokenization
not counted: llama.cpp's time is read from the timestamps of its own log lines from
"calculating perplexity" to "Final estimate"), both on 2 threads, measured in the same
run. llama-perplexity runs with its default batch (2048: eight windows of 256 at once,
over a KV cache of 2048 cells) unless --batch gives its -b; `--batch 256` (one window per
batch) gives the same figures and was faster on the 2-core machine. Without
LLAMA_PERPLEXITY (or when it is not executable) llama.cpp's columns are left empty.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench_common import llama_tool, source_model
from corral.runtime.engine import Engine
from corral.runtime.perplexity import bos_for, perplexity, text_tokens

TEXT = Path("/usr/share/common-licenses/GPL-3")
THREADS = 2
MODELS = ("smollm2", "qwen2.5-coder", "gemma3")
STAMP = r"(\d+)\.(\d+)\.(\d+)\.(\d+) I "  # llama.cpp log prefix: minutes.seconds.ms.us
STARTED = re.compile(STAMP + r"perplexity: calculating perplexity")
FINISHED = re.compile(STAMP + r"Final estimate: PPL = (\d+\.\d+)")


@dataclass(frozen=True)
class Score:
    ppl: float
    tokens_per_s: float


def seconds(match: re.Match[str]) -> float:
    minutes, secs, ms, us = (int(match.group(i)) for i in range(1, 5))
    return minutes * 60 + secs + ms / 1e3 + us / 1e6


def run_llama(
    binary: Path, model: Path, text: Path, n_ctx: int, n_chunks: int, batch: int | None
) -> Score:
    cmd = [binary, "-m", model, "-f", text, "-c", str(n_ctx), "-t", str(THREADS)]
    cmd += ["--chunks", str(n_chunks), *(["-b", str(batch)] if batch else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    log = proc.stderr + proc.stdout
    started, finished = STARTED.search(log), FINISHED.search(log)
    if started is None or finished is None:
        raise RuntimeError(f"unexpected llama-perplexity output:\n{log[-2000:]}")
    elapsed = seconds(finished) - seconds(started)
    return Score(float(finished.group(5)), n_chunks * n_ctx / elapsed)


def run_corral(model: Path, text: str, n_ctx: int, n_chunks: int) -> Score:
    engine = Engine.load(model)
    ids = text_tokens(engine.tokenizer, text)
    started = time.perf_counter()
    result = perplexity(engine.model, ids, n_ctx, n_chunks, bos_for(engine.tokenizer))
    elapsed = time.perf_counter() - started
    return Score(result.ppl, result.n_chunks * n_ctx / elapsed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="names or paths")
    parser.add_argument("--ctx", type=int, default=256, help="tokens per window (-c)")
    parser.add_argument("--chunks", type=int, default=8, help="windows scored (--chunks)")
    parser.add_argument("--text", type=Path, default=TEXT, help="the text file (-f)")
    parser.add_argument("--batch", type=int, help="llama-perplexity's -b (default: its own)")
    args = parser.parse_args()
    binary = llama_tool("LLAMA_PERPLEXITY")
    text = args.text.read_bytes().decode("utf-8")
    batch = f", llama.cpp -b {args.batch}" if args.batch else ""
    print(f"{args.text}, -c {args.ctx} --chunks {args.chunks}, {THREADS} threads{batch}")
    header = f"{'model':<42} {'corral':>8} {'llama.cpp':>9} {'diff':>7}"
    print(f"{header} {'corral tok/s':>12} {'llama tok/s':>11} {'ratio':>6}")
    for name in args.models:
        model = source_model(name)
        ours = run_corral(model, text, args.ctx, args.chunks)
        cells = [f"{model.name:<42}", f"{ours.ppl:8.4f}"]
        if binary is None:
            cells += [f"{'-':>9}", f"{'-':>7}", f"{ours.tokens_per_s:12.0f}", f"{'-':>11}"]
        else:
            theirs = run_llama(binary, model, args.text, args.ctx, args.chunks, args.batch)
            diff = 100 * (ours.ppl / theirs.ppl - 1)
            cells += [f"{theirs.ppl:9.4f}", f"{diff:+6.2f}%", f"{ours.tokens_per_s:12.0f}"]
            ratio = ours.tokens_per_s / theirs.tokens_per_s
            cells += [f"{theirs.tokens_per_s:11.0f}", f"{ratio:5.2f}x"]
        print(" ".join(cells))


if __name__ == "__main__":
    main()
