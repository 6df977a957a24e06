"""Chat templates from GGUF (`tokenizer.chat_template`), rendered with Jinja2.

Templates come from downloaded files and requests, so they run in Jinja2's immutable
sandbox, bounded in the steps, output and value sizes of a render (jinja_limits.py),
with the same environment settings and helpers that Hugging Face's
`apply_chat_template` gives them (trim_blocks, lstrip_blocks, loop controls,
the `{% generation %}` block, raise_exception, strftime_now, a tojson that
keeps non-ASCII text).

Three conventions follow llama.cpp's chat rendering (common/chat.cpp), the reference
corral is compared with:
- an undefined value is lenient all the way down (`messages[0]['role']` of an empty list
  is undefined, not an error);
- the context also holds today's date as `date_string` ("22 Nov 2026", which Llama 3.x
  templates print as "Today Date") and `datetime` ("Nov 22 2026");
- a template that does not take a system message (it refuses one, as Gemma 2's does,
  or leaves it out of its output) gets the system prompt merged into the next message,
  "system\nmessage", instead of failing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import cached_property, lru_cache
from typing import Any, ClassVar

import jinja2
import jinja2.ext
from jinja2 import nodes
from jinja2.parser import Parser

from corral.runtime.jinja_limits import BoundedSandbox, RenderLimit, budget

# Used when a model ships no template: plain role-labelled turns.
PLAIN_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'user' %}User: {{ message['content'] }}\n\n"
    "{% else %}Assistant: {{ message['content'] }}\n\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


# A conversation to find out whether a template uses a system message's content.
_SYSTEM_PROBE = "corral-system-probe-7f3a"
_PROBE_MESSAGES = (
    {"role": "system", "content": _SYSTEM_PROBE},
    {"role": "user", "content": "User message"},
)


class TemplateError(ValueError):
    """A chat template failed to compile or render; the message says why."""


def _raise_exception(message: str) -> None:
    raise TemplateError(f"chat template refused the conversation: {message}")


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    """Hugging Face's tojson; undefined values are null."""
    return json.dumps(
        value,
        ensure_ascii=ensure_ascii,
        indent=indent,
        separators=separators,
        sort_keys=sort_keys,
        default=lambda v: None if isinstance(v, jinja2.Undefined) else str(v),
    )


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class _GenerationBlock(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}` (Hugging Face marks the assistant's part of
    a training sample with it): renders its body."""

    tags: ClassVar[set[str]] = {"generation"}

    def parse(self, parser: Parser) -> list[nodes.Node]:
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


@lru_cache(maxsize=1)
def _environment() -> BoundedSandbox:
    env = BoundedSandbox(
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.ChainableUndefined,
        extensions=[jinja2.ext.loopcontrols, _GenerationBlock],
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.bound_filters()
    return env


class ChatTemplate:
    """A compiled chat template plus the special tokens it may refer to."""

    def __init__(self, source: str | None, bos_token: str = "", eos_token: str = "") -> None:
        self.source = source or PLAIN_TEMPLATE
        self.is_fallback = not source
        self.bos_token = bos_token
        self.eos_token = eos_token
        try:
            self._template = _environment().from_string(self.source)
        except jinja2.TemplateSyntaxError as e:
            raise TemplateError(f"chat template does not compile (line {e.lineno}): {e}") from e
        except RecursionError:  # Jinja's parser and Python's compiler recurse per level
            raise TemplateError("chat template does not compile: it nests too deeply") from None

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        **extra: Any,
    ) -> str:
        """Render a conversation to the prompt text the model expects."""
        turns = [dict(m) for m in messages]
        if turns and turns[0].get("role") == "system" and not self.supports_system_role:
            turns = _merge_system(turns)
        return self._render(turns, add_generation_prompt, extra)

    @cached_property
    def supports_system_role(self) -> bool:
        """Whether a system message's content reaches the output (llama.cpp's check)."""
        try:
            text = self._render([dict(m) for m in _PROBE_MESSAGES], False, {})
        except TemplateError:
            return False
        return _SYSTEM_PROBE in text

    def _render(
        self, messages: list[dict[str, Any]], add_generation_prompt: bool, extra: dict[str, Any]
    ) -> str:
        now = datetime.now()
        context = {"date_string": now.strftime("%d %b %Y"), "datetime": now.strftime("%b %d %Y")}
        try:
            with budget():
                return self._template.render(
                    **{**context, **extra},
                    messages=messages,
                    add_generation_prompt=add_generation_prompt,
                    bos_token=self.bos_token,
                    eos_token=self.eos_token,
                )
        except RenderLimit as e:
            raise TemplateError(str(e)) from None
        except TemplateError:
            raise
        except Exception as e:  # the template's own code failed (Jinja or Python error)
            raise TemplateError(f"chat template failed to render: {e}") from e


def _merge_system(turns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The system message folded into the next one, as llama.cpp does for templates
    without a system role; a lone system message is dropped."""
    system, rest = turns[0], turns[1:]
    if not rest:
        return []
    first = dict(rest[0])
    if not (isinstance(system.get("content"), str) and isinstance(first.get("content"), str)):
        return turns  # parts, not text: left to the template
    first["content"] = system["content"] + "\n" + first["content"]
    return [first, *rest[1:]]
