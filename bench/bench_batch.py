"""Batched decoding: aggregate generation tokens/s of N concurrent streams vs one.

    python bench/bench_batch.py                 # SmolLM2-135M, 1 and 4 streams
    python bench/bench_batch.py model.gguf --streams 1 2 4 8 --runs 3
    python bench/bench_batch.py --no-bf16       # float32 weights (with the split helper)
    python bench/bench_batch.py --no-bf16 --no-split  # float32 products on one core

Each stream is its own session with its own prompt; N streams advance together
through Engine.step (one batched forward pass per token). End-of-generation
tokens do not stop a stream, as in llama.cpp's llama-batched-bench: every stream
generates `--tokens`, so N streams are N streams to the end (a stream that stopped
early would leave the others decoding in a smaller batch). Runs go in rounds
(each round measures every stream count once); prints the median aggregate rate and
the median of each round's ratio to one stream.
"""

from __future__ import annotations

import argparse
import time

from bench_common import interleaved_rates, source_model
from corral.runtime.arch import ops
from corral.runtime.bf16 import Bf16Matrix
from corral.runtime.engine import Engine
from corral.runtime.generation import Generation
from corral.runtime.sampling import SamplerOptions
from corral.runtime.tokenizer import Tokenizer

PROMPTS = [
    "The history of the printing press",
    "Write a short poem about the sea.",
    "def quicksort(items):",
    "Explain how a bicycle stays upright.",
    "The three primary colours are",
    "Once upon a time, in a village by the river,",
    "import numpy as np\n",
    "The best way to learn a language is",
]


class NoEndTokenizer:
    """The model's tokenizer with no end-of-generation tokens: streams run full length."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer

    @property
    def eog_ids(self) -> frozenset[int]:
        return frozenset()

    def __getattr__(self, name: str) -> object:
        return getattr(self._tokenizer, name)


def prefilled_streams(engine: Engine, streams: int, n_tokens: int) -> list[Generation]:
    """`streams` generations of `n_tokens` each, their prompts run, ready to decode."""
    gens = []
    for i, session in enumerate(engine.new_sessions(streams)):  # caches in one pool
        ids = engine.tokenizer.encode(PROMPTS[i % len(PROMPTS)])
        options = SamplerOptions(temperature=0.8, seed=i, repeat_penalty=1.0)
        gens.append(engine.start_generation(session, ids, options, n_tokens))
    for g in gens:
        engine.prefill(g)
    return gens


def aggregate_rate(engine: Engine, streams: int, n_tokens: int) -> float:
    gens = prefilled_streams(engine, streams, n_tokens)
    started, produced = time.perf_counter(), 0
    while any(g.next_token is not None for g in gens):
        produced += sum(1 for g in gens if g.next_token is not None)
        engine.step(gens)
    return produced / (time.perf_counter() - started)


def product_kind(engine: Engine) -> str:
    if any(isinstance(m, Bf16Matrix) for m in engine.model.matrices()):
        return "bfloat16 weights, compiled kernels on every core"
    if engine.model.linear is not ops.linear:
        return "float32 weights, split with a helper process"
    return "float32 weights, one core"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="smollm2")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--split",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="float32 weights: half of each batched product in a helper process "
        "(default: by model size)",
    )
    parser.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep a quantized model's matrices as bfloat16 (corral's default)",
    )
    args = parser.parse_args()
    args.model = str(source_model(args.model))
    engine = Engine.load(args.model, num_ctx=512, split=args.split, bf16=args.bf16)
    engine.tokenizer = NoEndTokenizer(engine.tokenizer)
    aggregate_rate(engine, 1, 8)  # warm up BLAS threads and page in the weights
    print(f"model: {args.model}\n{args.tokens} tokens per stream, median of {args.runs} rounds")
    print(f"batched products: {product_kind(engine)}")
    print(f"{'streams':>7} {'aggregate tok/s':>16} {'per stream':>11} {'vs 1 stream':>12}")

    def measure(streams: int) -> float:
        return aggregate_rate(engine, streams, args.tokens)

    for n, rate, ratio in interleaved_rates(measure, args.streams, args.runs):
        print(f"{n:7d} {rate:16.1f} {rate / n:11.1f} {ratio:11.2f}x")


if __name__ == "__main__":
    main()
