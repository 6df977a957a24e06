"""Greedy generation and chat prompts against llama.cpp's own outputs on the real models.

The references were produced by llama.cpp (xllamacpp) with the commands recorded in
tests/data/<model>_greedy.json and tests/data/chat_templates.json. Greedy chains, for
English, code, Chinese and chat prompts, two references per model:
- "default": the shipped file, llama.cpp defaults (f16 KV cache, quantized
  activations). Near-ties flip with harmless float differences, so corral must agree
  token for token up to the first step whose top-2 logit gap is < 0.5;
- "exact": an all-F32 copy with an f32 KV cache, flash attention off: float math, so
  corral must agree up to the first step whose gap is < 0.05.
How far corral's chain follows each reference beyond that is logged and recorded as the
test's user properties (pytest --junitxml, or -o log_cli=true to see it).

Chat prompts: corral's rendering of each model's template (Engine.render_chat; Gemma 3's
instruction template for gemma-3-270m, whose GGUF has none) and the token ids it then
evaluates equal llama.cpp's.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

import assets
from corral.runtime.chat_template import ChatTemplate
from corral.runtime.engine import Done, Engine, Piece
from corral.runtime.sampling import SamplerOptions

log = logging.getLogger(__name__)

DATA = Path(__file__).parent.parent / "data"
MODELS: dict[str, Callable[[], Path]] = {
    "smollm2": assets.smollm2_gguf,
    "qwen25_coder": assets.qwen25_coder_gguf,
    "gemma3": assets.gemma3_gguf,
}
GREEDY = {name: json.loads((DATA / f"{name}_greedy.json").read_text()) for name in MODELS}
TEMPLATES = json.loads((DATA / "chat_templates.json").read_text())
# llama.cpp's top-2 logit gap below which a step may go either way
MIN_GAP = {"default": 0.5, "exact": 0.05}
SECTIONS = tuple(MIN_GAP)
CASE_NAMES = [c["name"] for c in GREEDY["smollm2"]["default"]["cases"]]
assert all(
    [c["name"] for c in GREEDY[m][s]["cases"]] == CASE_NAMES for m in MODELS for s in SECTIONS
), "every model's greedy reference has the same prompts"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=list(MODELS))
def loaded(request: pytest.FixtureRequest) -> tuple[str, Engine]:
    """(name, engine) of each real model; pytest groups the tests by it, so each model
    is loaded once."""
    return request.param, Engine.load(MODELS[request.param]())


def case_of(model: str, section: str, name: str) -> dict:
    return next(c for c in GREEDY[model][section]["cases"] if c["name"] == name)


def confident_prefix(case: dict, min_gap: float) -> int:
    """Steps before the first one where llama.cpp's top-2 gap is below min_gap."""
    for i, step in enumerate(case["steps"]):
        if step["gap"] < min_gap:
            return i
    return len(case["steps"])


def greedy_along(engine: Engine, prompt: list[int], chains: list[list[int]]) -> list[int]:
    """corral's greedy continuation, generated for as long as it agrees with at least one
    of `chains` (and at most as long as the longest)."""
    options = SamplerOptions.greedy()
    n = max(len(c) for c in chains)
    gen = engine.start_generation(engine.new_session(), prompt, options, num_predict=n)
    events = engine.prefill(gen)
    ours: list[int] = []
    while gen.next_token is not None:
        ours.append(gen.next_token)
        i = len(ours) - 1
        if not any(i < len(c) and c[i] == ours[i] for c in chains):
            return ours
        events = engine.step([gen])[0]
    done = events[-1]
    assert isinstance(done, Done)
    return list(done.generated)


def common_prefix(a: list[int], b: list[int]) -> int:
    return next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )


def chat_template(engine: Engine, model: str) -> ChatTemplate:
    """The template llama.cpp rendered with: the GGUF's, or the one it was given."""
    name = TEMPLATES["models"][model]["template"]
    if name == "gguf":
        return engine.template
    text = (DATA / "chat_templates" / TEMPLATES["templates"][name]["file"]).read_text()
    own = engine.template
    return ChatTemplate(text, bos_token=own.bos_token, eos_token=own.eos_token)


def prompt_ids(engine: Engine, text: str) -> list[int]:
    """corral.daemon.prompts.encode's rule: no second BOS when the text starts with one."""
    bos = engine.template.bos_token
    add_special = not (bos and text.startswith(bos))
    return engine.tokenizer.encode(text, add_special=add_special, parse_special=True)


def as_llamacpp_prints(engine: Engine, text: str) -> str:
    """llama.cpp drops a leading BOS text when the vocabulary adds BOS itself."""
    bos = engine.template.bos_token
    return text.removeprefix(bos) if engine.tokenizer.add_bos and bos else text


@pytest.mark.parametrize("name", CASE_NAMES)
def test_greedy_chain_matches_llamacpp(
    loaded: tuple[str, Engine], name: str, record_property: Callable
) -> None:
    model, engine = loaded
    refs = {section: case_of(model, section, name) for section in SECTIONS}
    prompt = refs["default"]["prompt"]
    assert refs["exact"]["prompt_ids"] == refs["default"]["prompt_ids"]
    assert engine.tokenizer.encode(prompt) == refs["default"]["prompt_ids"]
    if messages := refs["default"].get("messages"):
        ours = chat_template(engine, model).render(messages)
        assert as_llamacpp_prints(engine, ours) == prompt
    chains = [refs[s]["generated_ids"] for s in SECTIONS]
    ours = greedy_along(engine, refs["default"]["prompt_ids"], chains)
    for section, ref in refs.items():
        required = confident_prefix(ref, MIN_GAP[section])
        matched = common_prefix(ours, ref["generated_ids"])
        summary = f"{matched}/{len(ref['generated_ids'])} matched, {required} required"
        record_property(f"{section}_tokens", summary)
        log.info("%s %s %s: %s", model, name, section, summary)
        assert matched >= required, f"{section}: {summary}"


def test_chat_rendering_matches_llamacpp(loaded: tuple[str, Engine]) -> None:
    """System prompts, multi-turn history, add_generation_prompt on and off."""
    model, engine = loaded
    reference = TEMPLATES["models"][model]
    template = chat_template(engine, model)
    for conv in TEMPLATES["conversations"]:
        expected = reference["renders"][conv["name"]]
        ours = template.render(conv["messages"], conv["add_generation_prompt"])
        assert as_llamacpp_prints(engine, ours) == expected["prompt"], conv["name"]
        assert prompt_ids(engine, ours) == expected["prompt_ids"], conv["name"]


def test_chat_template_is_the_ggufs_or_the_plain_fallback(loaded: tuple[str, Engine]) -> None:
    """SmolLM2 and Qwen render with their GGUF's template; gemma-3-270m (base) ships none
    and falls back to plain role-labelled turns."""
    model, engine = loaded
    name = TEMPLATES["models"][model]["template"]
    assert engine.template.is_fallback == (name != "gguf")
    if engine.template.is_fallback:
        text = engine.render_chat([{"role": "user", "content": "Hi"}])
        assert text == "User: Hi\n\nAssistant:"
    else:
        gguf_file = TEMPLATES["models"][model]["file"]
        (entry,) = (t for t in TEMPLATES["templates"].values() if gguf_file in t["source"])
        assert engine.template.source == (DATA / "chat_templates" / entry["file"]).read_text()


def test_second_turn_reuses_the_kv_cache(loaded: tuple[str, Engine]) -> None:
    """A follow-up turn evaluates only what the cached conversation lacks: at most the
    new turn (and, with a plain fallback template, a re-tokenized answer)."""
    _, engine = loaded
    messages = [{"role": "user", "content": "Name a colour."}]
    session = engine.new_session()
    first_prompt = prompt_ids(engine, engine.render_chat(messages))
    first = list(engine.generate(session, first_prompt, SamplerOptions.greedy(), num_predict=8))
    answer = "".join(e.text for e in first if isinstance(e, Piece))
    messages += [{"role": "assistant", "content": answer}, {"role": "user", "content": "Another?"}]
    prompt = prompt_ids(engine, engine.render_chat(messages))
    second = list(engine.generate(session, prompt, SamplerOptions.greedy(), num_predict=2))
    done = second[-1]
    assert isinstance(done, Done)
    assert 0 < done.prompt_eval_count <= len(prompt) - len(first_prompt)
    if not engine.template.is_fallback:
        assert done.prompt_eval_count < len(prompt) // 2
