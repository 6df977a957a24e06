"""Ollama's Go templates through a real daemon: a model created with one (by Ollama's own
client) prompts the model exactly as the same chat format in Jinja does, a request's
`template` is used, and a `.Suffix` template is how the model inserts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ollama
import pytest

from serving import Daemon

TEMPLATES = Path(__file__).resolve().parent.parent / "data" / "ollama_templates"
CHATML = (TEMPLATES / "chatml.gotmpl").read_text()  # the tiny model's own format, in Go
GREEDY = {"temperature": 0, "num_predict": 6}
CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hello"},
    {"role": "assistant", "content": "Hi there"},
    {"role": "user", "content": "How are you?"},
]


def assert_same_prompt(first: Any, second: Any) -> None:
    """Two greedy answers of one loaded model, one after the other, came from the same
    prompt tokens: the second ran only its last token (the cache held every earlier one,
    token for token: a session reuses the longest common prefix) and answered the same."""
    assert first.prompt_eval_count > 5 and second.prompt_eval_count == 1
    assert first.eval_count == second.eval_count
    text = (lambda r: r.message.content) if hasattr(first, "message") else (lambda r: r.response)
    assert text(first) == text(second)


@pytest.fixture(scope="module")
def client(base_url: str) -> ollama.Client:
    return ollama.Client(host=base_url)


@pytest.fixture(scope="module")
def go_chatml(client: ollama.Client, tcp_tiny: str) -> str:
    assert client.create("go-chatml", from_=tcp_tiny, template=CHATML).status == "success"
    return "go-chatml"


def test_a_go_template_prompts_as_the_same_format_in_jinja(
    client: ollama.Client, tcp_tiny: str, go_chatml: str
) -> None:
    assert client.show(go_chatml).template == CHATML
    go = client.generate(go_chatml, "Hello", system="Be brief.", options=GREEDY)
    jinja = client.generate(tcp_tiny, "Hello", system="Be brief.", options=GREEDY)
    assert go.context == jinja.context and go.response == jinja.response


def test_a_go_template_renders_the_whole_chat_history(
    client: ollama.Client, tcp_tiny: str, go_chatml: str
) -> None:
    go = client.chat(go_chatml, messages=CHAT, options=GREEDY)
    jinja = client.chat(tcp_tiny, messages=CHAT, options=GREEDY)
    assert_same_prompt(go, jinja)


def test_a_requests_go_template_is_used(daemon: Daemon, tiny: str) -> None:
    template = "{{ if .System }}S: {{ .System }}\n{{ end }}Q: {{ .Prompt }}\nA:"
    templated = daemon.client.generate(
        tiny, "Why?", system="Terse.", template=template, stream=False, options=GREEDY
    )
    raw = daemon.client.generate(
        tiny, "S: Terse.\nQ: Why?\nA:", raw=True, stream=False, options=GREEDY
    )
    assert_same_prompt(templated, raw)


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("{{ if .Prompt }}", "not a valid Go template as in Ollama's Modelfiles"),
        ("{{ x(1 }}", "neither a Jinja chat template"),
    ],
)
def test_a_broken_request_template_is_a_400(
    daemon: Daemon, tiny: str, template: str, problem: str
) -> None:
    body = {"model": tiny, "prompt": "hi", "template": template, "stream": False}
    status, answer, _ = daemon.raw("POST", "/api/generate", json.dumps(body))
    assert status == 400 and problem in json.loads(answer)["error"]


def test_a_template_that_fails_while_rendering_is_a_422(daemon: Daemon, tiny: str) -> None:
    body = {"model": tiny, "prompt": "hi", "template": "{{ eq .Prompt 1 }}", "stream": False}
    status, answer, _ = daemon.raw("POST", "/api/generate", json.dumps(body))
    assert status == 422 and "incompatible types for comparison" in json.loads(answer)["error"]


def test_a_suffix_template_inserts_as_in_ollama(daemon: Daemon, tiny: str) -> None:
    infill = "{{ if .Suffix }}<PRE> {{ .Prompt }} <SUF>{{ .Suffix }} <MID>{{ else }}{{ end }}"
    status, _ = daemon.post_json("/api/create", {"model": "fim", "from": tiny, "template": infill})
    assert status == 200
    assert "insert" in daemon.client.show("fim").capabilities
    assert "insert" not in daemon.client.show(tiny).capabilities  # no FIM tokens, no template
    filled = daemon.client.generate(
        "fim", "def f(", suffix="return x", stream=False, options=GREEDY
    )
    raw = daemon.client.generate(
        tiny, "<PRE> def f( <SUF>return x <MID>", raw=True, stream=False, options=GREEDY
    )
    assert_same_prompt(filled, raw)
