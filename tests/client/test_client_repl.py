"""`corral run NAME` on a pseudo-terminal: \"\"\" blocks and the slash commands, for real."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.client.api import Message
from serving import Daemon, Terminal


@pytest.fixture
def chat(daemon: Daemon, tiny: str) -> Iterator[Terminal]:
    """A chat with the tiny model, at its first prompt."""
    session = Terminal(["run", tiny], daemon.env)
    try:
        session.read_until(">>> ")
        yield session
    finally:
        if session.process.poll() is None:
            session.process.kill()
            session.process.wait()
        with contextlib.suppress(OSError):  # test_bye_leaves closed it already
            os.close(session.master)


def prompt_tokens(daemon: Daemon) -> list[int]:
    return [int(n) for n in re.findall(r"generating from (\d+) prompt tokens", daemon.log())]


def ask(session: Terminal, daemon: Daemon, text: str) -> int:
    """Send one line, wait for the answer; the prompt's token count the daemon logged."""
    before = len(prompt_tokens(daemon))
    session.type(text)
    session.read_until(">>> ")
    daemon.wait_for_log("generating from", before + 1)
    return prompt_tokens(daemon)[before]


def command(session: Terminal, text: str) -> str:
    session.type(text)
    return session.read_until(">>> ")


def test_a_triple_quoted_block_is_one_message(chat: Terminal, daemon: Daemon) -> None:
    one_line = ask(chat, daemon, "x")
    command(chat, "/clear")
    before = len(prompt_tokens(daemon))
    chat.type('"""x')
    chat.read_until("... ")
    chat.type("y")
    chat.read_until("... ")
    chat.type('z"""')
    chat.read_until(">>> ")
    daemon.wait_for_log("generating from", before + 1)
    # "x\ny\nz" is four byte tokens more than "x", and no fence reached the model
    assert prompt_tokens(daemon)[before] == one_line + 4


def test_set_parameter_applies_to_the_next_answers(chat: Terminal, daemon: Daemon) -> None:
    assert "Set parameter 'temperature' to '0'" in command(chat, "/set parameter temperature 0")
    assert "Set parameter 'num_predict' to '2'" in command(chat, "/set parameter num_predict 2")
    two_tokens = "generation ended (length) after 2 tokens"
    ended = daemon.log().count(two_tokens)
    ask(chat, daemon, "Tell me a story")
    daemon.wait_for_log(two_tokens, ended + 1)
    shown = command(chat, "/show parameters")
    assert "User defined parameters:" in shown and "num_predict" in shown
    assert "num_predict" in command(chat, "/show modelfile")  # the chat's, as Ollama's
    assert "Unknown parameter 'bogus'" in command(chat, "/set parameter bogus 1")
    assert "Couldn't set parameter: field 'top_k' must be an integer, got a string" in command(
        chat, "/set parameter top_k hot"
    )
    assert "Available Parameters:" in command(chat, "/set parameter")
    refused = command(chat, "/set parameter num_ctx 0")  # as the daemon would refuse it
    assert "Couldn't set parameter: option 'num_ctx' must be at least 1" in refused
    assert "num_ctx" not in command(chat, "/show parameters")  # not kept
    command(chat, "/set parameter stop <end> ###")
    assert "[<end> ###]" in command(chat, "/show parameters")  # as Ollama prints a list


def test_set_system_changes_the_prompt(chat: Terminal, daemon: Daemon) -> None:
    plain = ask(chat, daemon, "hi")
    command(chat, "/clear")
    assert "No system message was specified" in command(chat, "/show system")
    assert "Set system message." in command(chat, "/set system Talk like a pirate.")
    assert "Talk like a pirate." in command(chat, "/show system")
    assert ask(chat, daemon, "hi") > plain
    chat.type('/set system """Two')
    chat.read_until("... ")
    chat.type('lines"""')
    assert "Set system message." in chat.read_until(">>> ")
    assert "Two\r\nlines" in command(chat, "/show system")
    assert "Two\r\nlines" in command(chat, "/show modelfile")
    assert "/set system <string>" in command(chat, "/set system")  # usage; the system stays
    assert "Two\r\nlines" in command(chat, "/show system")


def test_show_prints_each_part_of_the_model(chat: Terminal) -> None:
    assert "architecture" in command(chat, "/show info")
    assert "<|im_start|>" in command(chat, "/show template")
    assert "architecture: llama" in command(chat, "/show modelfile")
    assert "No license was specified for this model." in command(chat, "/show license")
    assert "/show template" in command(chat, "/show")
    assert "Unknown command '/show bogus'. Type /? for help" in command(chat, "/show bogus")
    assert "/set parameter" in command(chat, "/? set")
    assert '"""' in command(chat, "/?")


def test_load_switches_models_and_refuses_unknown_ones(
    chat: Terminal, daemon: Daemon, tiny_gguf: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other.gguf"
    other.write_bytes(tiny_gguf.read_bytes())
    daemon.client.pull(str(other), stream=False)
    missing = command(chat, "/load nope")
    assert "Error: model 'nope' not found" in missing
    assert "Loading model 'other'" in command(chat, "/load other")
    before = daemon.log().count("other:latest: generating from")
    chat.type("hello")
    chat.read_until(">>> ")
    daemon.wait_for_log("other:latest: generating from", before + 1)


def test_save_makes_a_model_of_the_conversation(chat: Terminal, daemon: Daemon, tiny: str) -> None:
    command(chat, "/set system Be brief.")
    command(chat, "/set parameter top_k 7")
    ask(chat, daemon, "remember this")
    answer = command(chat, "/save keeper")
    assert "Created new model 'keeper'" in answer
    shown = daemon.client.show("keeper")
    assert shown.system == "Be brief." and "top_k" in shown.parameters
    turns = [(m.role, m.content) for m in shown.messages]
    assert turns[0] == ("user", "remember this") and turns[1][0] == "assistant"
    listed = {m.name: m.digest for m in daemon.client.list().models}
    assert listed["keeper:latest"] == listed[tiny]  # the same file, with the chat on top
    assert "Error: invalid model name" in command(chat, "/save ../bad")
    assert "Usage:" in command(chat, "/save")


def test_a_saved_conversation_is_shown_when_it_is_run_or_loaded(
    chat: Terminal, daemon: Daemon, tiny: str
) -> None:
    turns = [Message(role="user", content="I am Bob"), Message(role="assistant", content="Hi Bob")]
    daemon.client.create("bobchat", from_=tiny, messages=turns, stream=False)
    chat.type("/load bobchat")
    assert chat.read_until("Hi Bob\r\n").endswith("Loading model 'bobchat'\r\n>>> I am Bob\r\n")
    assert chat.read_until(">>> ") == "\r\n"
    session = Terminal(["run", "bobchat"], daemon.env)
    try:
        assert session.read_until("Hi Bob\r\n") == ">>> I am Bob\r\n"  # before the prompt
        session.type("/bye")
        assert session.close() == 0
    finally:
        if session.process.poll() is None:
            session.process.kill()


@pytest.mark.parametrize("word", ["/bye", "/exit"])
def test_bye_leaves(chat: Terminal, word: str) -> None:
    chat.type(word)
    assert chat.close() == 0
