"""The scheduler through a real daemon: a full queue answers 503, a budget too small 507."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving import Daemon
from tiny import write_tiny_llama

LONG_NAME = "long:latest"
# Greedy without a repeat penalty, the tiny model never picks its end token: it runs on.
ENDLESS = {
    "num_ctx": 100_000,
    "num_predict": -1,
    "temperature": 0,
    "repeat_penalty": 1.0,
}
BOUNDED = {"num_ctx": 100_000, "num_predict": 3, "seed": 1}


@pytest.fixture(scope="module")
def busy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One request at a time per model, at most one waiting; a model that talks forever."""
    folder = tmp_path_factory.mktemp("queue")
    model = write_tiny_llama(folder / "long.gguf", context_length=131072, endless=True)
    with Daemon.start_in(folder / "home", CORRAL_NUM_PARALLEL="1", CORRAL_MAX_QUEUE="1") as d:
        d.client.pull(str(model), stream=False)
        yield d


def send_generate(daemon: Daemon, options: dict) -> socket.socket:
    body = json.dumps({"model": LONG_NAME, "prompt": "Tell me everything", "options": options})
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(60)
    sock.connect(str(daemon.socket_path))
    sock.sendall(
        f"POST /api/generate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        f"Connection: close\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode()
    )
    return sock


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    received = b""
    while marker not in received:
        chunk = sock.recv(4096)
        assert chunk, received
        received += chunk
    return received


def read_all(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def test_a_full_queue_is_503_and_a_client_that_leaves_frees_its_place(busy: Daemon) -> None:
    running = send_generate(busy, ENDLESS)
    read_until(running, b'"response"')  # it holds the only slot
    queued_before = busy.log().count("request queued (1 waiting)")
    waiting = send_generate(busy, BOUNDED)
    busy.wait_for_log("request queued (1 waiting)", queued_before + 1)

    status, body = busy.post_json(
        "/api/generate", {"model": LONG_NAME, "prompt": "Hi", "stream": False}
    )
    assert status == 503
    assert body == {
        "error": "server busy: the queue of waiting requests is full (CORRAL_MAX_QUEUE=1); "
        "try again later"
    }

    waiting.close()  # its client went away: its place in the queue is free at once
    replacement = send_generate(busy, BOUNDED)
    busy.wait_for_log("request queued (1 waiting)", queued_before + 2)

    cancelled = busy.log().count("generation ended (cancel)")
    running.close()  # frees the slot: the replacement runs and ends by itself
    busy.wait_for_log("generation ended (cancel)", cancelled + 1)
    answer = read_all(replacement)
    lines = [
        json.loads(x) for x in answer.split(b"\r\n\r\n", 1)[1].split(b"\n") if x.startswith(b"{")
    ]
    assert lines[-1]["done"] and lines[-1]["eval_count"] == 3
    replacement.close()


def test_a_model_bigger_than_the_memory_budget_is_refused(tmp_path: Path) -> None:
    model = write_tiny_llama(tmp_path / "tiny.gguf")
    with Daemon.start_in(tmp_path / "home", CORRAL_MAX_MEMORY="100KB") as daemon:
        daemon.client.pull(str(model), stream=False)
        status, body = daemon.post_json(
            "/api/generate", {"model": "tiny", "prompt": "Hi", "stream": False}
        )
        assert status == 507
        assert body["error"].startswith("tiny:latest needs about ")
        assert body["error"].endswith(
            "more than CORRAL_MAX_MEMORY allows (100.0 KB): raise CORRAL_MAX_MEMORY, "
            "or lower num_ctx if the weights fit"
        )
        assert daemon.client.version()  # still serving


def test_parallel_slots_answer_two_streams_at_once(tmp_path: Path) -> None:
    model = write_tiny_llama(tmp_path / "long.gguf", context_length=131072, endless=True)
    with Daemon.start_in(tmp_path / "home", CORRAL_NUM_PARALLEL="2") as daemon:
        daemon.client.pull(str(model), stream=False)
        daemon.client.generate(LONG_NAME, "", options=ENDLESS, stream=False)  # load it
        queued = daemon.log().count("request queued")
        first, second = send_generate(daemon, ENDLESS), send_generate(daemon, ENDLESS)
        for sock in (first, second):  # both stream while neither has ended
            read_until(sock, b'"response"')
        assert daemon.log().count("request queued") == queued  # neither had to wait
        first.close()
        second.close()
        daemon.wait_for_log("generation ended (cancel)", 2)


def test_a_client_leaving_a_long_embedding_stops_it(busy: Daemon) -> None:
    """Cancellation is checked between chunks of one input, not only between inputs."""
    body = json.dumps(
        {"model": LONG_NAME, "input": "tell me more " * 20_000, "options": {"num_ctx": 100_000}}
    )
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(busy.socket_path))
    sock.sendall(
        f"POST /api/embed HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}".encode()
    )
    busy.wait_for_log("embedding 1 input")
    sock.close()
    busy.wait_for_log("input 0 of 1: embedding cancelled after")
    answer = busy.client.generate(LONG_NAME, "Hi", options=BOUNDED, stream=False)
    assert answer.done and answer.eval_count == 3  # the slot is free again
