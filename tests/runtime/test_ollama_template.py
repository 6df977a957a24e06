"""Ollama's Go chat templates rendered as Ollama renders them, checked against Ollama's own
test vectors (tests/data/ollama_templates, copied from its repository: see the README there)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corral.runtime.ollama_template import (
    OllamaTemplate,
    collate,
    is_go_template,
    template_error,
)

DATA = Path(__file__).resolve().parent.parent / "data" / "ollama_templates"
TEMPLATES = sorted(p.name for p in DATA.glob("*.gotmpl"))
# The conversations of Ollama's TestTemplate (template/template_test.go), by case name.
CONVERSATIONS = {
    "user": [("user", "Hello, how are you?")],
    "user-assistant-user": [
        ("user", "Hello, how are you?"),
        ("assistant", "I'm doing great. How can I help you today?"),
        ("user", "I'd like to show off how chat templating works!"),
    ],
}
CONVERSATIONS["system-user-assistant-user"] = [
    ("system", "You are a helpful assistant."),
    *CONVERSATIONS["user-assistant-user"],
]
# Ollama's test drops one trailing space from these templates' output before comparing.
TRAILING_SPACE_DROPPED = {"chatqa", "llama2-chat", "mistral-instruct", "openchat", "vicuna"}
EXECUTE_CASES = json.loads((DATA / "execute_with_messages.json").read_text())


def messages(pairs: list[tuple[str, str]] | list[list[str]]) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in pairs]


def test_every_template_ollama_ships_is_here() -> None:
    assert len(TEMPLATES) == 20
    assert all((DATA / "expected" / name).is_dir() for name in TEMPLATES)


@pytest.mark.parametrize("name", TEMPLATES)
@pytest.mark.parametrize("case", sorted(CONVERSATIONS))
def test_renders_what_ollama_renders(name: str, case: str) -> None:
    template = OllamaTemplate((DATA / name).read_text())
    text = template.render(messages(CONVERSATIONS[case]))
    if name.removesuffix(".gotmpl") in TRAILING_SPACE_DROPPED:
        text = text.removesuffix(" ")
    assert text == (DATA / "expected" / name / case).read_text()


@pytest.mark.parametrize(
    ("case", "variant"),
    [(c["name"], v) for c in EXECUTE_CASES for v in c["templates"]],
)
def test_legacy_message_and_infill_templates_render_as_ollamas(case: str, variant: str) -> None:
    """Per-turn templates (.System/.Prompt/.Response) stop where the last answer begins;
    .Messages templates see the whole chat; .Suffix templates insert."""
    spec = next(c for c in EXECUTE_CASES if c["name"] == case)
    template = OllamaTemplate(spec["templates"][variant])
    if "suffix" in spec:
        assert template.render_infill(spec["prompt"], spec["suffix"]) == spec["expected"]
    else:
        assert template.render(messages(spec["messages"])) == spec["expected"]


def test_a_template_without_response_or_messages_gets_response_appended() -> None:
    template = OllamaTemplate("Q: {{ .Prompt }} A: ")
    chat = messages([("user", "a"), ("assistant", "b"), ("user", "c")])
    assert template.render(chat) == "Q: a A: bQ: c A: "


def test_collate_merges_consecutive_roles_and_joins_system_messages() -> None:
    chat = messages([("system", "s1"), ("system", "s2"), ("user", "a"), ("user", "b")])
    system, collated = collate(chat)
    assert system == "s1\n\ns2"
    assert [(m["Role"], m["Content"]) for m in collated] == [
        ("system", "s1\n\ns2"),
        ("user", "a\n\nb"),
    ]
    assert collated[0]["ToolCalls"] == ()  # every field a template may read is there


def test_a_messages_unset_fields_are_gos_zero_values() -> None:
    """Ollama's messages are structs: an unset ToolName is "" (corral printed <no value>),
    unset ToolCalls and Images are nil slices (printed [], of length 0)."""
    tool_result = (  # Ollama's TestParse ToolResultConditional
        '{{ range .Messages }}{{ if eq .Role "tool" }}Tool Result: {{ .ToolName }} '
        "{{ .Content }}{{ end }}{{ end }}"
    )
    chat = messages([("user", "a"), ("tool", "42")])
    assert OllamaTemplate(tool_result).render(chat) == "Tool Result:  42"
    fields = "{{ range .Messages }}[{{ .Thinking }}|{{ .ToolCallID }}|{{ .Images }}|"
    fields += "{{ len .ToolCalls }}|{{ eq .Thinking `` }}]{{ end }}"
    assert OllamaTemplate(fields).render(chat[:1]) == "[||[]|0|true]"


def test_go_and_jinja_templates_are_told_apart() -> None:
    assert is_go_template("{{ .Prompt }}")
    assert is_go_template("{{- range .Messages }}{{ .Content }}{{ end }}")
    assert not is_go_template("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    assert not is_go_template("{{ bos_token }}{{ messages[0]['content'] }}")
    assert not is_go_template("plain text")


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("{{ if .Prompt }}", "not a valid Go template as in Ollama's Modelfiles"),
        ("{{ .Prompt ", "unclosed action"),
        ("{{ nope .Prompt }}", 'function "nope" not defined'),
        ("{{ x(1 }}", "neither a Jinja chat template (line 1: unexpected '}'"),
    ],
)
def test_a_broken_template_is_named_in_one_line(source: str, problem: str) -> None:
    error = template_error(source)
    assert error is not None and problem in error and "\n" not in error


def test_a_template_of_megabytes_is_refused_before_it_is_parsed() -> None:
    """A request's 2.4 MB template took 6 s to check, in the daemon's event loop."""
    error = template_error("{{ .X }}" * 300_000)
    assert error is not None and "more than the 262144 allowed" in error
    assert template_error("{{ .X }}" * 30_000) is None


def test_valid_templates_of_either_kind_have_no_error() -> None:
    assert template_error((DATA / "llama3-instruct.gotmpl").read_text()) is None
    assert template_error("{% for m in messages %}{{ m['content'] }}{% endfor %}") is None


def test_a_template_reading_suffix_inserts() -> None:
    assert OllamaTemplate(
        "{{ if .Suffix }}<PRE>{{ .Prompt }}<SUF>{{ .Suffix }}<MID>{{ end }}"
    ).uses_suffix
    assert not OllamaTemplate((DATA / "chatml.gotmpl").read_text()).uses_suffix


@pytest.mark.parametrize(
    "source",
    [
        "{{ " + "(" * 5000 + ".A" + ")" * 5000 + " }}",
        "{{ " + "(" * 5000 + "a" + ")" * 5000 + " }}",
        "{% if a %}" * 5000 + "{% endif %}" * 5000,
    ],
    ids=["go-parentheses", "jinja-parentheses", "jinja-ifs"],
)
def test_a_template_nested_too_deeply_is_named_in_one_line(source: str) -> None:
    """Neither kind's parser may exhaust the stack (it was a RecursionError: a 500)."""
    error = template_error(source)
    assert error is not None and "nests too deeply" in error and "\n" not in error
