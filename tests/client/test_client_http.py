"""The `Client` class as a script uses it, against a real daemon and the tiny model."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any

import pytest

from corral.client.http import Client, ResponseError
from serving import Daemon
from tiny import write_tiny_llama

GREEDY = {"temperature": 0, "num_predict": 4, "repeat_penalty": 1.0}


@pytest.fixture(scope="module")
def talker(daemon: Daemon, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny model that never stops by itself: every answer has num_predict tokens."""
    path = write_tiny_llama(tmp_path_factory.mktemp("talker") / "talker.gguf", endless=True)
    daemon.client.pull(str(path), stream=False)
    return "talker"


def test_generate_asks_for_log_probabilities(daemon: Daemon, talker: str) -> None:
    client = daemon.client
    pieces = list(client.generate(talker, "Hi", options=GREEDY, logprobs=True, top_logprobs=2))
    logprobs = [lp for p in pieces for lp in p.logprobs or ()]
    assert len(logprobs) == pieces[-1].eval_count == 4
    assert all(lp.top_logprobs is not None and len(lp.top_logprobs) == 2 for lp in logprobs)
    whole = client.generate(talker, "Hi", options=GREEDY, logprobs=True, stream=False)
    assert whole.logprobs is not None and len(whole.logprobs) == 4
    assert all(lp.top_logprobs is None for lp in whole.logprobs)


def test_chat_asks_for_log_probabilities(daemon: Daemon, talker: str) -> None:
    chat = [{"role": "user", "content": "Hi"}]
    answer = daemon.client.chat(
        talker, chat, options=GREEDY, logprobs=True, top_logprobs=1, stream=False
    )
    assert answer.logprobs is not None and len(answer.logprobs) == 4
    text = bytes(b for lp in answer.logprobs for b in lp.bytes or ()).decode(errors="replace")
    assert text == answer.message.content


def test_chat_with_truncate_false_is_refused_when_too_long(daemon: Daemon, talker: str) -> None:
    turn = "word " * 30
    history = [
        {"role": role, "content": f"{i} {turn}"} for i in range(6) for role in ("user", "assistant")
    ] + [{"role": "user", "content": "and now?"}]
    assert daemon.client.chat(talker, history, options=GREEDY, stream=False).done  # cut
    with pytest.raises(ResponseError) as refused:
        daemon.client.chat(talker, history, options=GREEDY, truncate=False, stream=False)
    assert refused.value.status == 400 and "truncate" in refused.value.message


def test_closing_the_client_ends_its_open_streams(daemon: Daemon, talker: str) -> None:
    with daemon.client as client:
        started = client.generate(talker, "Hi", options=GREEDY)
        assert next(started).response is not None
        unstarted = client.chat(talker, [{"role": "user", "content": "Hi"}], options=GREEDY)
    assert list(started) == [] and list(unstarted) == []  # not the rest of the answer
    assert client.generate(talker, "Hi", options=GREEDY, stream=False).done  # still usable
    client.close()  # again, with nothing open


@pytest.mark.parametrize("method", [Client.generate, Client.chat, Client.create, Client.pull])
def test_every_typed_signature_names_every_argument(method: Callable[..., Any]) -> None:
    """An editor completes (and a type checker checks) the arguments of the overloads,
    which say what `stream` returns: each has all of the method's own."""
    expected = list(inspect.signature(method).parameters)
    overloads = typing.get_overloads(method)
    assert len(overloads) == 3  # stream=True, stream=False, and a bool not known in advance
    for overload in overloads:
        assert list(inspect.signature(overload).parameters) == expected
