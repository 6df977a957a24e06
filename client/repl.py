"""The interactive chat of `corral run NAME`: a conversation kept across turns.

    >>> Why is the sky blue?
    (the answer streams in)

Ctrl+C stops the current answer (the turn is dropped) and keeps the chat
going; Ctrl+D or /bye leaves. Slash commands are a table, so later ones
(/set, /show, /load, ...) are one entry each.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from corral.client.api import ChatResponse, Message
from corral.client.format import timing_summary
from corral.client.http import Client, ResponseError

PROMPT = ">>> "
HELP = """Available Commands:
  /clear          Clear session context
  /bye            Exit
  /?, /help       Help for a command

Use Ctrl + d or /bye to exit."""


@dataclass
class Repl:
    client: Client
    model: str
    verbose: bool = False
    keep_alive: str | None = None
    read: Callable[[str], str] = input
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    history: list[Message] = field(default_factory=list)

    def run(self) -> None:
        """Chat until /bye or end of input."""
        _enable_line_editing()
        self.client.generate(self.model, "", stream=False, keep_alive=self.keep_alive)  # load
        while True:
            try:
                line = self.read(PROMPT)
            except EOFError:
                print(file=self.out)
                return
            except KeyboardInterrupt:
                print("\nUse Ctrl + d or /bye to exit.", file=self.out)
                continue
            text = line.strip()
            if not text:
                continue
            if text.startswith("/"):
                if not self.command(text):
                    return
                continue
            self.answer(text)

    def command(self, text: str) -> bool:
        """Run a slash command; False means leave."""
        name = text.split()[0]
        handler = COMMANDS.get(name)
        if handler is None:
            print(f"Unknown command '{name}'. Type /? for help", file=self.out)
            return True
        return handler(self, text)

    def answer(self, text: str) -> None:
        """One turn: send the conversation, stream the reply, keep it in the history."""
        self.history.append(Message(role="user", content=text))
        parts: list[str] = []
        last: ChatResponse | None = None
        try:
            stream = self.client.chat(self.model, self.history, keep_alive=self.keep_alive)
            with contextlib.closing(stream):
                for last in stream:
                    parts.append(last.message.content)
                    print(last.message.content, end="", flush=True, file=self.out)
        except KeyboardInterrupt:  # stop this answer, keep chatting
            self.history.pop()
            print(file=self.out)
            return
        except ResponseError as e:
            self.history.pop()
            print(f"\nError: {e.message}", file=self.err)
            return
        print("\n", file=self.out)
        self.history.append(Message(role="assistant", content="".join(parts)))
        if self.verbose and last is not None and last.done:
            print("\n".join(timing_summary(last)), file=self.err)


def _bye(repl: Repl, text: str) -> bool:
    return False


def _help(repl: Repl, text: str) -> bool:
    print(HELP, file=repl.out)
    return True


def _clear(repl: Repl, text: str) -> bool:
    repl.history.clear()
    print("Cleared session context", file=repl.out)
    return True


COMMANDS: dict[str, Callable[[Repl, str], bool]] = {
    "/bye": _bye,
    "/?": _help,
    "/help": _help,
    "/clear": _clear,
}


def _enable_line_editing() -> None:
    """Arrow keys and history in input() on a terminal, where readline exists."""
    if sys.stdin.isatty():
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401  (importing it is what enables editing)
