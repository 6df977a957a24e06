"""Chat templates rendered by corral against llama.cpp's own Jinja rendering.

Real templates (tests/data/chat_templates/, provenance in tests/data/chat_templates.json:
SmolLM2's ChatML, Qwen2.5's, Llama 3.1 and 3.2, Gemma 2 and Gemma 3) are stored in tiny
GGUFs whose control tokens are those the template's model uses (BOS first, so the
`bos_token` a template prints is the real one) and whose add_bos flag is the model's.
corral (Engine.render_chat) and llama.cpp (xllamacpp's llama-server, /apply-template,
live: loading a tiny model takes milliseconds) render the same conversations.

llama.cpp drops a leading BOS text from its rendering when the vocabulary adds BOS by
itself; corral keeps it in the text and the daemon then adds no second BOS. So the texts
are compared with that BOS removed, and the token ids each side would evaluate are
compared too. Llama 3.x prompts carry today's date ("Today Date: ..."), as llama.cpp
renders them, rather than the template's default of 26 Jul 2024.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from corral.runtime.chat_template import ChatTemplate
from corral.runtime.engine import Engine
from llamacpp_ref import LlamaCpp, Settings
from tiny import write_tiny_llama

DATA = Path(__file__).parent.parent / "data"
REFERENCE = json.loads((DATA / "chat_templates.json").read_text())
CONVERSATIONS = REFERENCE["conversations"]
CHATML = ("<|im_start|>", "<|endoftext|>", "<|im_end|>")  # SmolLM2: BOS <|im_start|>
QWEN = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
LLAMA3 = ("<|begin_of_text|>", "<|start_header_id|>", "<|eot_id|>", "<|end_header_id|>")
GEMMA = ("<bos>", "<start_of_turn>", "<eos>", "<end_of_turn>")


@dataclass(frozen=True)
class Family:
    specials: tuple[str, ...]  # control tokens: BOS first, EOS third
    add_bos: bool
    pre: str  # a pre-tokenizer both llama.cpp and corral know


FAMILIES: dict[str, Family] = {
    "HuggingFaceTB-SmolLM2-135M-Instruct": Family(CHATML, False, "smollm"),
    "Qwen-Qwen2.5-Coder-0.5B-Instruct": Family(QWEN, False, "qwen2"),
    "meta-llama-Llama-3.1-8B-Instruct": Family(LLAMA3, True, "llama-bpe"),
    "meta-llama-Llama-3.2-3B-Instruct": Family(LLAMA3, True, "llama-bpe"),
    "google-gemma-2-2b-it": Family(GEMMA, True, "gpt-2"),
    "google-gemma-3-it": Family(GEMMA, True, "gpt-2"),
}


def template_text(name: str) -> str:
    return (DATA / "chat_templates" / REFERENCE["templates"][name]["file"]).read_text()


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def pair(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Engine, LlamaCpp]:
    """corral and llama.cpp on one tiny GGUF carrying a real template."""
    name, family = request.param, FAMILIES[request.param]
    path = write_tiny_llama(
        tmp_path_factory.mktemp("tpl") / f"{name}.gguf",
        specials=family.specials,
        chat_template=template_text(name),
        add_bos=family.add_bos,
        pre=family.pre,
    )
    return name, Engine.load(path), LlamaCpp(path, Settings(n_ctx=256))


def prompt_ids(engine: Engine, text: str) -> list[int]:
    """The ids corral evaluates for a rendered chat (corral.daemon.prompts.encode's rule:
    no BOS added when the text already starts with one)."""
    bos = engine.template.bos_token
    add_special = not (bos and text.startswith(bos))
    return engine.tokenizer.encode(text, add_special=add_special, parse_special=True)


def as_llamacpp_prints(engine: Engine, text: str) -> str:
    """corral's rendering as llama.cpp would print it (leading BOS text dropped when the
    vocabulary adds BOS itself)."""
    bos = engine.template.bos_token
    return text.removeprefix(bos) if engine.tokenizer.add_bos and bos else text


@pytest.mark.parametrize("conv", CONVERSATIONS, ids=[c["name"] for c in CONVERSATIONS])
def test_rendering_matches_llamacpp(pair: tuple[str, Engine, LlamaCpp], conv: dict) -> None:
    name, engine, llama = pair
    messages, add_generation_prompt = conv["messages"], conv["add_generation_prompt"]
    theirs = llama.apply_template(messages, add_generation_prompt)
    ours = engine.render_chat(messages, add_generation_prompt=add_generation_prompt)
    assert as_llamacpp_prints(engine, ours) == theirs, name
    assert prompt_ids(engine, ours) == llama.tokenize(theirs), name


def test_real_templates_are_those_recorded() -> None:
    """The template files are the ones the reference data was made with."""
    for name, entry in REFERENCE["templates"].items():
        text = (DATA / "chat_templates" / entry["file"]).read_bytes()
        assert hashlib.sha256(text).hexdigest() == entry["sha256"], name
    assert set(FAMILIES) == set(REFERENCE["templates"])


def test_system_role_support_is_detected() -> None:
    """Gemma 2 refuses a system message; the others print it (Gemma 3 in the first user
    turn, Llama 3 in its system header)."""
    supports = {name: ChatTemplate(template_text(name)).supports_system_role for name in FAMILIES}
    assert supports == {name: name != "google-gemma-2-2b-it" for name in FAMILIES}


def test_gemma_folds_the_system_prompt_into_the_first_user_turn() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "2+2?"},
    ]
    turns = "<start_of_turn>model\nHello!<end_of_turn>\n<start_of_turn>user\n2+2?<end_of_turn>\n"
    turns += "<start_of_turn>model\n"
    gemma3 = ChatTemplate(template_text("google-gemma-3-it"), bos_token="<bos>")
    expected = "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n" + turns
    assert gemma3.render(messages) == expected
    gemma2 = ChatTemplate(template_text("google-gemma-2-2b-it"), bos_token="<bos>")
    expected = "<bos><start_of_turn>user\nBe brief.\nHi<end_of_turn>\n" + turns
    assert gemma2.render(messages) == expected  # llama.cpp's merge: "system\nuser"


def test_model_without_template_falls_back_to_plain_turns(tmp_path: Path) -> None:
    """No tokenizer.chat_template: corral renders plain role-labelled turns (llama.cpp
    would use ChatML, a format such a model has not seen either)."""
    engine = Engine.load(write_tiny_llama(tmp_path / "bare.gguf", chat_template=None))
    assert engine.template.is_fallback
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "2+2?"},
    ]
    assert engine.render_chat(messages) == (
        "Be brief.\n\nUser: Hi\n\nAssistant: Hello!\n\nUser: 2+2?\n\nAssistant:"
    )
    assert engine.render_chat(messages, add_generation_prompt=False).endswith("User: 2+2?\n\n")
