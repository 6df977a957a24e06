from __future__ import annotations

from datetime import datetime

import pytest

from corral.runtime.chat_template import ChatTemplate, TemplateError, _environment
from tiny import CHATML_TEMPLATE

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "2+2?"},
]


def test_chatml_multi_turn() -> None:
    text = ChatTemplate(CHATML_TEMPLATE).render(MESSAGES)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_fallback_template_is_plain() -> None:
    t = ChatTemplate(None)
    assert t.is_fallback
    assert t.render(MESSAGES[:2]) == "Be brief.\n\nUser: Hi\n\nAssistant:"


def test_raise_exception_and_sandbox() -> None:
    t = ChatTemplate("{{ raise_exception('roles must alternate') }}")
    with pytest.raises(TemplateError, match="roles must alternate"):
        t.render(MESSAGES)
    evil = ChatTemplate("{{ messages.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(TemplateError):
        evil.render(MESSAGES)


def test_syntax_error_is_clear() -> None:
    with pytest.raises(TemplateError, match="does not compile"):
        ChatTemplate("{% for m in messages %}")


def test_loop_controls_and_generation_block() -> None:
    """Hugging Face's environment: {% break %}/{% continue %} and {% generation %}."""
    t = ChatTemplate(
        "{% for m in messages %}{% if m['role'] == 'assistant' %}{% break %}{% endif %}"
        "{% if m['content'] == 'Hi' %}{% continue %}{% endif %}{{ m['content'] }}|{% endfor %}"
        "{% generation %}{{ 'end' }}{% endgeneration %}"
    )
    assert t.render(MESSAGES) == "Be brief.|end"


def test_undefined_values_are_lenient() -> None:
    """As in llama.cpp's Jinja: an undefined value's items are undefined, not errors, and
    tojson writes it as null (with Hugging Face's tojson arguments)."""
    t = ChatTemplate(
        "{% if messages[0]['role'] == 'system' %}S{% endif %}"
        "{{ tools | tojson }} {{ {'b': 'é', 'a': 1} | tojson(sort_keys=True, ensure_ascii=True) }}"
    )
    assert t.render([]) == 'null {"a": 1, "b": "\\u00e9"}'


def test_python_errors_inside_a_template_are_template_errors() -> None:
    with pytest.raises(TemplateError, match="failed to render"):
        ChatTemplate("{{ messages | tojson(no_such_argument=1) }}").render(MESSAGES)


def test_system_prompt_merged_where_the_template_drops_it() -> None:
    """A template that leaves system messages out gets the system prompt merged into the
    next message, "system\\nuser", as llama.cpp does; a lone system message is dropped."""
    t = ChatTemplate(
        "{% for m in messages %}{% if m['role'] != 'system' %}"
        "[{{ m['role'] }}] {{ m['content'] }}\n{% endif %}{% endfor %}"
    )
    assert not t.supports_system_role
    assert t.render(MESSAGES) == "[user] Be brief.\nHi\n[assistant] Hello!\n[user] 2+2?\n"
    assert t.render(MESSAGES[:1]) == ""
    assert ChatTemplate(CHATML_TEMPLATE).supports_system_role


def test_date_string_is_today_unless_given() -> None:
    """llama.cpp gives templates today's date as date_string (Llama 3.x prints it)."""
    t = ChatTemplate("{{ date_string }}")
    before = datetime.now().strftime("%d %b %Y")
    assert t.render(MESSAGES) in (before, datetime.now().strftime("%d %b %Y"))
    assert t.render(MESSAGES, date_string="26 Jul 2024") == "26 Jul 2024"


HOSTILE_TEMPLATES = {
    "nested loops": "{% for i in range(9999) %}{% for j in range(9999) %}{% endfor %}{% endfor %}",
    "repetition": "{{ 'x' * 100000 * 100000 }}",
    "doubling": (
        "{% set ns = namespace(x='x') %}{% for i in range(40) %}"
        "{% set ns.x = ns.x ~ ns.x %}{% endfor %}{{ ns.x|length }}"
    ),
    "doubling by +": (
        "{% set ns = namespace(x='x') %}{% for i in range(40) %}"
        "{% set ns.x = ns.x + ns.x %}{% endfor %}"
    ),
    "doubling a block": (
        "{% set ns = namespace(x='x') %}{% for i in range(40) %}"
        "{% set ns.x %}{{ ns.x }}{{ ns.x }}{% endset %}{% endfor %}"
    ),
    "literal in a loop": "{% for i in range(99999) %}{% for j in range(9) %}"
    + "y" * 2000
    + "{% endfor %}{% endfor %}",
    "center": "{{ 'x'|center(10**10) }}",
    "ljust": "{{ 'x'.ljust(10**10) }}",
    "printf width": "{{ '%0999999999d' % 1 }}",
    "format width": "{{ '{:>999999999}'.format(1) }}",
    "format filter": "{{ '%0999999999d'|format(1) }}",
    "power": "{{ 9 ** 999999999 }}",
    "replace": "{{ ('x' * 100000).replace('', 'y' * 100000) }}",
    "join filter": "{{ range(100000)|join('y' * 100000) }}",
    "join method": "{{ ('y' * 100000).join(range(100000)|map('string')|list) }}",
    "expandtabs": "{{ ('\t' * 10000).expandtabs(1000000) }}",
    "indent": "{{ ('\n' * 100000)|indent(1000000) }}",
    "lipsum": "{{ lipsum(1000000) }}",
    "recursive macro": "{% macro f() %}{{ f() }}{{ f() }}{% endmacro %}{{ f() }}",
}


@pytest.mark.parametrize("source", HOSTILE_TEMPLATES.values(), ids=HOSTILE_TEMPLATES.keys())
def test_a_hostile_template_is_stopped_not_run_forever(source: str) -> None:
    """Templates come from requests and uploaded files: a render is bounded in steps, output
    and value sizes, as Go templates are, instead of holding a core or the memory."""
    with pytest.raises(TemplateError):
        ChatTemplate(source).render(MESSAGES)


def test_constant_expressions_are_not_folded_when_compiling() -> None:
    """The optimizer would run `center(1000000)` at compile time, unbounded (a 50-character
    template compiled to megabytes of code)."""
    source = "{{ 'x'|center(1000000) }}{% if 'x'|center(1000000) %}{% endif %}"
    code = _environment().compile(source, raw=True)
    assert len(code) < 100_000


def test_ordinary_operators_and_filters_still_work() -> None:
    source = (
        "{% for m in messages %}{{ m.role ~ ': ' ~ m.content }}|{% endfor %}"
        "{{ '%3s|%-2d' % ('a', 2) }}{{ [1, 2]|join(', ') }}{{ 'ab' * 2 }}{{ 'x'|center(3) }}"
    )
    assert (
        ChatTemplate(source).render(MESSAGES[:2]) == "system: Be brief.|user: Hi|  a|2 1, 2abab x "
    )
