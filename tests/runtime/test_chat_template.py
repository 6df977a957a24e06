from __future__ import annotations

import pytest

from corral.runtime.chat_template import ChatTemplate, TemplateError
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
