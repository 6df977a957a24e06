"""Greedy generation against llama.cpp's own outputs on the real SmolLM2-135M.

The reference chains were produced by llama.cpp (xllamacpp) with the command
recorded in tests/data/smollm2_greedy.json. Two references:
- "q4_1": the shipped file, llama.cpp defaults (f16 KV cache, quantized
  activations). Near-ties flip with harmless float differences, so corral must
  agree token for token up to the first step whose top-2 logit gap is < 0.5.
- "f32": an all-F32 copy with an f32 KV cache, flash attention off: exact float
  math, so corral must agree up to the first step whose gap is < 0.05.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corral.runtime.engine import Done, Engine, Piece
from corral.runtime.sampling import SamplerOptions

REFERENCE = json.loads((Path(__file__).parent.parent / "data" / "smollm2_greedy.json").read_text())
TOLERANCE = {"q4_1": 0.5, "f32": 0.05}
CASES = [(section, case) for section in TOLERANCE for case in REFERENCE[section]["cases"]]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine(smollm2_path: Path) -> Engine:
    return Engine.load(smollm2_path)


def greedy(engine: Engine, prompt_ids: list[int], n: int) -> tuple[list[int], str]:
    events = list(engine.generate(engine.new_session(), prompt_ids, SamplerOptions.greedy(), n))
    done = events[-1]
    assert isinstance(done, Done)
    return list(done.generated), "".join(e.text for e in events if isinstance(e, Piece))


def confident_prefix(case: dict, min_gap: float) -> int:
    """Steps before the first one where llama.cpp's top-2 gap is below min_gap."""
    for i, step in enumerate(case["steps"]):
        if step["gap"] < min_gap:
            return i
    return len(case["steps"])


@pytest.mark.parametrize(("section", "case"), CASES, ids=[f"{s}-{c['name']}" for s, c in CASES])
def test_greedy_chain_matches_llamacpp(engine: Engine, section: str, case: dict) -> None:
    assert engine.tokenizer.encode(case["prompt"]) == case["prompt_ids"]
    n = confident_prefix(case, TOLERANCE[section])
    ours, _ = greedy(engine, case["prompt_ids"], len(case["generated_ids"]))
    assert ours[:n] == case["generated_ids"][:n]


def test_capital_of_france(engine: Engine) -> None:
    ids = engine.tokenizer.encode("The capital of France is")
    _, text = greedy(engine, ids, 8)
    assert text.startswith(" Paris")


def test_second_turn_reuses_the_kv_cache(engine: Engine) -> None:
    messages = [{"role": "user", "content": "Name a colour."}]
    session = engine.new_session()
    first = list(
        engine.generate(
            session,
            engine.tokenizer.encode(engine.render_chat(messages)),
            SamplerOptions.greedy(),
            num_predict=16,
        )
    )
    answer = "".join(e.text for e in first if isinstance(e, Piece))
    messages += [{"role": "assistant", "content": answer}, {"role": "user", "content": "Another?"}]
    prompt = engine.tokenizer.encode(engine.render_chat(messages))
    second = list(engine.generate(session, prompt, SamplerOptions.greedy(), num_predict=4))
    done = second[-1]
    assert isinstance(done, Done)
    assert 0 < done.prompt_eval_count < len(prompt) // 2
