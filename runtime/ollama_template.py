"""Ollama's Go chat templates (a Modelfile's TEMPLATE), rendered as Ollama renders them.

    template = OllamaTemplate('{{ if .System }}{{ .System }} {{ end }}{{ .Prompt }}')
    template.render([{"role": "user", "content": "Hi"}])

As Ollama's template/template.go does: consecutive messages of one role are
merged, the system messages joined make `.System`; a template that uses
`.Messages` is run once on the whole conversation, and any other runs once per
prompt/response pair, the last run stopping where `.Response` would be written.
A template using neither `.Messages` nor `.Response` gets `{{ .Response }}`
appended. `.Suffix` templates render fill-in-the-middle prompts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import jinja2

from corral.runtime.chat_template import ChatTemplate, TemplateError
from corral.runtime.gotemplate import GoTemplateError, execute, parse
from corral.runtime.gotemplate.parse import (
    Action,
    Arg,
    Branch,
    Command,
    Field,
    Node,
    Pipe,
    Variable,
)

RESPONSE = Action(Pipe((Command((Field(("Response",)),)),)), line=0)
# A message's fields as a template sees them (Ollama's templateMessage) with their Go zero
# values: empty strings, and nil slices, which print as [] and have length 0.
MESSAGE_FIELDS: dict[str, Any] = {
    "Role": "",
    "Content": "",
    "Thinking": "",
    "Images": (),
    "ToolCalls": (),
    "ToolName": "",
    "ToolCallID": "",
}
# `{{ .X`, `{{- $x`, `{{ if .X`, `{{ json .X`, `{{ end }}`, `{{- else -}}`: Go, never Jinja
# (whose `{{ if .X }}` would parse as the attribute if.X).
GO_LOOKING = re.compile(
    r"\{\{-?\s*(?:[A-Za-z_]\w*\s+)*[.$][A-Za-z_]|\{\{-?\s*(?:end|else)\s*-?\}\}"
)
# Chat templates are a few kilobytes (the longest GGUF ones tens); a request's is checked
# in the event loop, where parsing megabytes would hold up every other request.
MAX_TEMPLATE = 256 << 10  # characters
# What a template sees of the request besides the conversation (no thinking, no tools).
REQUEST_VALUES: dict[str, Any] = {"Think": False, "ThinkLevel": "", "IsThinkSet": False}


def is_go_template(source: str) -> bool:
    """Whether `source` is written in Go's template syntax: it parses as Go and reads
    `.Fields` or `$variables` (which Jinja cannot parse), or parses as Go only."""
    try:
        nodes = parse(source)
    except GoTemplateError:
        return False
    return bool(identifiers(nodes)) or jinja_error(source) is not None


def template_error(source: str) -> str | None:
    """None if `source` is a chat template corral renders (Jinja, or Go as in Ollama's
    Modelfiles), else why it is neither, in one line."""
    if len(source) > MAX_TEMPLATE:
        return f"the template is {len(source)} characters, more than the {MAX_TEMPLATE} allowed"
    try:
        go_problem = None if identifiers(parse(source)) else "it reads no .Fields or $variables"
    except GoTemplateError as e:
        go_problem = str(e)
    if go_problem is None:
        return None
    if GO_LOOKING.search(source):  # Jinja may parse `{{ if .X }}`: it means Go
        return f"the template is not a valid Go template as in Ollama's Modelfiles: {go_problem}"
    if (jinja_problem := jinja_error(source)) is None:
        return None
    return (
        f"the template is neither a Jinja chat template ({jinja_problem}) "
        f"nor a Go template as in Ollama's Modelfiles ({go_problem})"
    )


def jinja_error(source: str) -> str | None:
    """Why `source` does not compile as a Jinja chat template, or None."""
    try:
        ChatTemplate(source)
    except TemplateError as e:
        cause = e.__cause__
        if isinstance(cause, jinja2.TemplateSyntaxError):
            return f"line {cause.lineno}: {cause.message}"
        return str(e)
    return None


@dataclass(frozen=True)
class OllamaTemplate:
    source: str

    @cached_property
    def nodes(self) -> tuple[Node, ...]:
        nodes = parse(self.source)
        if not {"messages", "response"} & identifiers(nodes):
            nodes = (*nodes, RESPONSE)
        return nodes

    @cached_property
    def variables(self) -> frozenset[str]:
        """The lower-cased names it reads (Ollama's Vars)."""
        return identifiers(self.nodes)

    @property
    def uses_suffix(self) -> bool:
        return "suffix" in self.variables

    def render(self, messages: Sequence[Mapping[str, Any]]) -> str:
        """The prompt for a conversation of {"role", "content"} messages."""
        system, collated = collate(messages)
        if "messages" in self.variables:
            values = {"System": system, "Messages": collated, "Tools": None, "Response": ""}
            return execute(self.nodes, {**values, **REQUEST_VALUES})
        return self._render_turns(collated)

    def render_infill(self, prompt: str, suffix: str) -> str:
        values = {"Prompt": prompt, "Suffix": suffix, "Response": ""}
        return execute(self.nodes, {**values, **REQUEST_VALUES})

    def _render_turns(self, messages: Sequence[Mapping[str, Any]]) -> str:
        """Legacy templates (.System, .Prompt, .Response): one run per turn."""
        out: list[str] = []
        turn = {"System": "", "Prompt": "", "Response": ""}

        def run(nodes: Sequence[Node]) -> None:
            out.append(execute(nodes, {**turn, **REQUEST_VALUES}))
            turn.update(System="", Prompt="", Response="")

        for message in messages:
            role, content = message["Role"], message["Content"]
            if role == "system":
                if turn["Prompt"] or turn["Response"]:
                    run(self.nodes)
                turn["System"] = content
            elif role == "user":
                if turn["Response"]:
                    run(self.nodes)
                turn["Prompt"] = content
            elif role == "assistant":
                turn["Response"] = content
        run(_Cut().nodes(self.nodes))
        return "".join(out)


def collate(messages: Sequence[Mapping[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """The system messages joined, and the messages with consecutive ones of a role
    (other than tool) merged, as the template sees them (Role, Content, ...)."""
    system: list[str] = []
    collated: list[dict[str, Any]] = []
    for message in messages:
        role, content = str(message.get("role", "")), str(message.get("content") or "")
        if role == "system":
            system.append(content)
        if collated and collated[-1]["Role"] == role and role != "tool":
            collated[-1]["Content"] += "\n\n" + content
        else:
            collated.append({**MESSAGE_FIELDS, "Role": role, "Content": content})
    return "\n\n".join(system), collated


# ----- the tree walks Ollama's rendering needs ---------------------------------------


def identifiers(nodes: Sequence[Node]) -> frozenset[str]:
    """Field and variable names read anywhere (lower-cased), as Ollama's Identifiers
    collects them: not the fields of a parenthesized pipeline."""
    names: set[str] = set()

    def pipe(p: Pipe) -> None:
        for command in p.commands:
            for arg in command.args:
                if isinstance(arg, Field):
                    names.update(n.lower() for n in arg.names)
                elif isinstance(arg, Variable):
                    names.update(n.lower() for n in (arg.name, *arg.names))
                elif isinstance(arg, Pipe):
                    pipe(arg)

    def walk(node_list: Sequence[Node]) -> None:
        for node in node_list:
            if isinstance(node, Action):
                pipe(node.pipe)
            elif isinstance(node, Branch):
                pipe(node.pipe)
                walk(node.body)
                walk(node.otherwise)

    walk(nodes)
    return frozenset(names)


class _Cut:
    """The template up to and including the first `.Response` field, nothing after it
    (Ollama's deleteNode): the last turn's prompt ends where the answer begins."""

    def __init__(self) -> None:
        self.cut = False

    def nodes(self, nodes: Sequence[Node]) -> tuple[Node, ...]:
        kept: list[Node] = []
        for node in nodes:
            if self.cut:
                continue
            if isinstance(node, Action):
                pipe = self.pipe(node.pipe)
                if pipe is not None:
                    kept.append(replace(node, pipe=pipe))
            elif isinstance(node, Branch):  # its condition is not searched, as in Ollama
                body = self.nodes(node.body)
                kept.append(replace(node, body=body, otherwise=self.nodes(node.otherwise)))
            else:
                kept.append(node)
        return tuple(kept)

    def pipe(self, pipe: Pipe) -> Pipe | None:
        commands = []
        for command in pipe.commands:
            args = [a for a in (self.arg(a) for a in command.args) if a is not None]
            if args:
                commands.append(Command(tuple(args)))
        return replace(pipe, commands=tuple(commands)) if commands else None

    def arg(self, arg: Arg) -> Arg | None:
        if self.cut:
            return None
        if isinstance(arg, Field) and "Response" in arg.names:
            self.cut = True
        elif isinstance(arg, Pipe):
            return self.pipe(arg)
        return arg  # a Chain is not searched either
