"""The interactive chat of `corral run NAME`: a conversation kept across turns.

    >>> Why is the sky blue?
    (the answer streams in)
    >>> \"\"\"Summarize this:
    ... line one
    ... line two\"\"\"

Ctrl+C stops the current answer (the turn is dropped) and keeps the chat
going; Ctrl+D or /bye leaves. `\"\"\"` begins a message of several lines, ended
by a line ending in `\"\"\"` (also after `/set system`). The slash commands
live in repl_commands.py, one table entry each.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from corral.client.api import ChatResponse, Message
from corral.client.format import terminal_wrap, timing_summary
from corral.client.http import Client, ResponseError
from corral.client.repl_commands import COMMANDS

PROMPT = ">>> "
CONTINUATION = "... "
FENCE = '"""'
MULTILINE_COMMANDS = ("/set system",)  # commands whose argument may be a """ block


@dataclass
class Repl:
    client: Client
    model: str
    verbose: bool = False
    keep_alive: str | None = None
    word_wrap: bool = True  # on a terminal, answers break at spaces (--nowordwrap: not)
    read: Callable[[str], str] = input
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    history: list[Message] = field(default_factory=list)
    system: str | None = None  # /set system: replaces the model's system prompt
    options: dict[str, Any] = field(default_factory=dict)  # /set parameter

    def run(self) -> None:
        """Chat until /bye or end of input."""
        _enable_line_editing()
        self.load()
        while True:
            try:
                text = self.read_message()
            except EOFError:
                print(file=self.out)
                return
            except KeyboardInterrupt:
                print("\nUse Ctrl + d or /bye to exit.", file=self.out)
                continue
            if not text.strip():
                continue
            if text.lstrip().startswith("/"):
                if not self.command(text.strip()):
                    return
                continue
            self.answer(text)

    def load(self) -> None:
        """Load the model now, so the first answer does not wait for it, and print the
        conversation it holds (a chat kept with /save), as `ollama run` does."""
        self.client.generate(self.model, "", stream=False, keep_alive=self.keep_alive)
        self.replay(self.client.show(self.model).messages or ())

    def replay(self, messages: Sequence[Message]) -> None:
        """Print saved turns as they looked when typed and answered."""
        for message in messages:
            if message.role == "user":
                print(f"{PROMPT}{message.content}", file=self.out)
            elif message.role == "assistant":
                print(f"{message.content}\n", file=self.out)

    def read_message(self) -> str:
        """One message: a line, or a \"\"\" block of lines (its fences removed)."""
        line = self.read(PROMPT)
        head, fence, body = line.partition(FENCE)
        opens = fence and (not head.strip() or head.strip() in MULTILINE_COMMANDS)
        if not opens:
            return line
        lines = []
        while not body.endswith(FENCE):
            lines.append(body)
            body = self.read(CONTINUATION)
        lines.append(body.removesuffix(FENCE))
        if len(lines) > 1 and not lines[0].strip():  # the fence alone on the first line
            lines.pop(0)
        return head + "\n".join(lines)

    def command(self, text: str) -> bool:
        """Run a slash command; False means leave."""
        name, _, rest = text.partition(" ")
        handler = COMMANDS.get(name)
        if handler is None:
            print(f"Unknown command '{name}'. Type /? for help", file=self.out)
            return True
        return handler(self, rest.strip())

    def conversation(self) -> list[Message]:
        system = [Message(role="system", content=self.system)] if self.system else []
        return [*system, *self.history]

    def answer(self, text: str) -> None:
        """One turn: send the conversation, stream the reply, keep it in the history."""
        self.history.append(Message(role="user", content=text))
        parts: list[str] = []
        last: ChatResponse | None = None
        wrap = terminal_wrap(self.out) if self.word_wrap else None
        try:
            stream = self.client.chat(
                self.model,
                self.conversation(),
                options=self.options or None,
                keep_alive=self.keep_alive,
            )
            with contextlib.closing(stream):
                for last in stream:
                    parts.append(last.message.content)
                    text = wrap.feed(last.message.content) if wrap else last.message.content
                    print(text, end="", flush=True, file=self.out)
        except KeyboardInterrupt:  # stop this answer, keep chatting
            self.history.pop()
            print(wrap.flush() if wrap else "", file=self.out)
            return
        except ResponseError as e:
            self.history.pop()
            print(f"\nError: {e.message}", file=self.err)
            return
        print(wrap.flush() if wrap else "", end="\n\n", file=self.out)
        self.history.append(Message(role="assistant", content="".join(parts)))
        if self.verbose and last is not None and last.done:
            print("\n".join(timing_summary(last)), file=self.err)


def _enable_line_editing() -> None:
    """Arrow keys and history in input() on a terminal, where readline exists."""
    if sys.stdin.isatty():
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401  (importing it is what enables editing)
