"""Regenerate tests/data/chat_templates/ and tests/data/chat_templates.json: real chat
templates and llama.cpp's renderings of test conversations with them.

Run from the repository root (about a minute; fetches the models on first use):

    python tests/data/make_chat_template_refs.py

Templates (tests/data/chat_templates/*.jinja), each as its model's authors wrote it:
- SmolLM2-135M-Instruct (ChatML) and Qwen2.5-Coder-0.5B-Instruct (Qwen): the
  `tokenizer.chat_template` of the real GGUF files (tests/assets.py);
- Llama 3.1 and 3.2 Instruct, Gemma 2 it: llama.cpp's copies of the Hugging Face
  templates, vendor/llama.cpp/models/templates/ of the llama-cpp-python 0.3.36 sdist;
- Gemma 3 it (google-gemma-3-it.jinja, committed, not regenerated): the "chat_template"
  of google/gemma-3-*-it's tokenizer_config.json, as quoted verbatim in
  ShishirPatil/gorilla, berkeley-function-call-leaderboard/bfcl/model_handler/
  local_inference/gemma.py (commit 72055c51cf809ba0ee04b4332a3515d7ec8549a5).

References (chat_templates.json "models"): llama.cpp (xllamacpp's in-process llama-server,
jinja on) renders every conversation of CONVERSATIONS with /apply-template on the real
GGUF files: SmolLM2 and Qwen with their own templates, gemma-3-270m (a base model whose
GGUF has none) with Gemma 3's given as --chat-template. For each it records the prompt
text and its token ids (/tokenize, add_special and parse_special on, as /completion
tokenizes a prompt). llama.cpp drops a leading BOS text from the rendering when the
vocabulary adds BOS itself (gemma), so the ids hold exactly one BOS.

The Llama and Gemma 2 templates are compared live in tests (tiny GGUFs, cheap), since
llama.cpp renders today's date into Llama 3.x prompts.
"""

from __future__ import annotations

import importlib.metadata
import logging
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import gguf
import xllamacpp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/
import assets
from llamacpp_ref import LlamaCpp, Settings
from refs_common import MODELS, dumps, generator_versions, sha256

log = logging.getLogger("make_chat_template_refs")

DATA = Path(__file__).parent
TEMPLATES = DATA / "chat_templates"
OUT = DATA / "chat_templates.json"
COMMAND = "python tests/data/make_chat_template_refs.py"
SDIST_TEMPLATES = "vendor/llama.cpp/models/templates/"

# template name -> where it comes from: ("gguf", model) | ("sdist", member) | ("file", note)
GEMMA3_SOURCE = (
    "google/gemma-3-*-it tokenizer_config.json chat_template, quoted verbatim in "
    "ShishirPatil/gorilla berkeley-function-call-leaderboard/bfcl/model_handler/"
    "local_inference/gemma.py @ 72055c51cf809ba0ee04b4332a3515d7ec8549a5"
)
SOURCES: dict[str, tuple[str, str]] = {
    "HuggingFaceTB-SmolLM2-135M-Instruct": ("gguf", "smollm2"),
    "Qwen-Qwen2.5-Coder-0.5B-Instruct": ("gguf", "qwen25_coder"),
    "meta-llama-Llama-3.1-8B-Instruct": ("sdist", "meta-llama-Llama-3.1-8B-Instruct.jinja"),
    "meta-llama-Llama-3.2-3B-Instruct": ("sdist", "meta-llama-Llama-3.2-3B-Instruct.jinja"),
    "google-gemma-2-2b-it": ("sdist", "google-gemma-2-2b-it.jinja"),
    "google-gemma-3-it": ("file", GEMMA3_SOURCE),
}
# real model -> the template llama.cpp renders with (None: the GGUF's own)
MODEL_TEMPLATES: dict[str, str | None] = {
    "smollm2": None,
    "qwen25_coder": None,
    "gemma3": "google-gemma-3-it",
}
# (name, messages, add_generation_prompt)
CONVERSATIONS: tuple[tuple[str, list[dict[str, str]], bool], ...] = (
    ("user", [{"role": "user", "content": "Hello!"}], True),
    (
        "system",
        [
            {"role": "system", "content": "You are a pirate. Answer like one."},
            {"role": "user", "content": "Where is the treasure?"},
        ],
        True,
    ),
    (
        "multi_turn",
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello! How can I help?"},
            {"role": "user", "content": "What is 2+2?"},
        ],
        True,
    ),
    (
        "history_without_generation_prompt",
        [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Tell me a joke."},
        ],
        False,
    ),
    (
        "whitespace_and_unicode",
        [
            {"role": "system", "content": "  Réponds en français.  "},
            {"role": "user", "content": "  你好，世界！\n\n"},
        ],
        True,
    ),
    ("lone_system", [{"role": "system", "content": "You are terse."}], True),
)


def gguf_template(model: str) -> str:
    field = gguf.GGUFReader(MODELS[model].fetch()).fields["tokenizer.chat_template"]
    return str(field.contents())


def sdist_templates(members: list[str]) -> dict[str, str]:
    """Template files from the llama-cpp-python sdist (sha256-checked)."""
    with tempfile.TemporaryDirectory() as tmp:
        sdist = assets._pip_download(
            assets.LLAMA_CPP_REQUIREMENT, Path(tmp), "--no-binary", ":all:"
        )
        if sha256(sdist) != assets.LLAMA_CPP_SDIST_SHA256:
            raise RuntimeError(f"{sdist.name}: sha256 differs from the recorded one")
        with tarfile.open(sdist) as tar:
            names = {Path(m.name).name: m for m in tar.getmembers() if SDIST_TEMPLATES in m.name}
            return {m: tar.extractfile(names[m]).read().decode() for m in members}


def write_templates() -> dict[str, dict[str, str]]:
    """Write the template files; returns name -> {file, source, sha256}."""
    members = [where for kind, where in SOURCES.values() if kind == "sdist"]
    from_sdist = sdist_templates(members)
    record = {}
    for name, (kind, where) in SOURCES.items():
        path = TEMPLATES / f"{name}.jinja"
        if kind == "gguf":
            path.write_text(gguf_template(where), encoding="utf-8")
            source = f"tokenizer.chat_template of {MODELS[where].fetch().name}"
        elif kind == "sdist":
            path.write_text(from_sdist[where], encoding="utf-8")
            source = f"{assets.LLAMA_CPP_REQUIREMENT} sdist: {SDIST_TEMPLATES}{where}"
        else:
            source = where
        record[name] = {"file": path.name, "source": source, "sha256": sha256(path)}
    return record


def model_renders(model: str) -> dict[str, Any]:
    path, template = MODELS[model].fetch(), MODEL_TEMPLATES[model]
    text = (TEMPLATES / f"{template}.jinja").read_text() if template else None
    llama = LlamaCpp(path, Settings(), chat_template=text)
    renders = {}
    for name, messages, add_generation_prompt in CONVERSATIONS:
        prompt = llama.apply_template(messages, add_generation_prompt)
        renders[name] = {"prompt": prompt, "prompt_ids": llama.tokenize(prompt)}
    log.info("%s: %d conversations rendered", model, len(renders))
    return {
        "file": path.name,
        "requirement": MODELS[model].requirement,
        "sha256": sha256(path),
        "template": template or "gguf",
        "renders": renders,
    }


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    templates = write_templates()
    doc = {
        "command": COMMAND,
        "generator": generator_versions(),
        "llama_cpp": "/apply-template (jinja), /tokenize add_special parse_special",
        "templates": templates,
        "conversations": [
            {"name": n, "messages": m, "add_generation_prompt": g} for n, m, g in CONVERSATIONS
        ],
        "models": {model: model_renders(model) for model in MODEL_TEMPLATES},
    }
    OUT.write_text(dumps(doc) + "\n", encoding="utf-8")
    log.info("wrote %s", OUT)


if __name__ == "__main__":
    main()
