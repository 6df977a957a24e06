"""Errors raised after a stream has begun, through a real daemon: the client gets the
text so far, then a last error frame: `{"error": ...}` in NDJSON (as Ollama sends it),
`data: {"error": {...}}` in OpenAI's server-sent events (which OpenAI's client raises)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gguf
import httpx
import numpy as np
import ollama
import openai
import pytest

from corral.client.http import ResponseError
from serving import Daemon
from tiny import write_tiny_llama

PROMPT = "Write a story"
N_TOKENS = 16
# what /v1/completions turns temperature, seed and max_tokens into (top_p 1.0 by default)
SAMPLED = {"temperature": 0.9, "top_p": 1.0, "seed": 3, "num_predict": N_TOKENS}
SHUTDOWN = "corral is shutting down; the answer was cut short"


def poison_token(path: Path, token: int) -> None:
    """Make one token's embedding NaN in place: feeding it gives NaN logits."""
    reader = gguf.GGUFReader(path, "r+")
    (embeddings,) = [t for t in reader.tensors if t.name == "token_embd.weight"]
    embeddings.data[token] = np.nan  # (V, d) memmap of the file
    reader.data.flush()


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory, tcp_daemon: Daemon) -> str:
    """A model that breaks down (NaN logits) a few tokens into its answer to PROMPT: the
    healthy model's own answer gives a token it samples mid-way, whose embedding is then
    poisoned in a copy. Returns the copy's name."""
    folder = tmp_path_factory.mktemp("broken")
    healthy = write_tiny_llama(folder / "healthy.gguf", endless=True)
    tcp_daemon.client.pull(str(healthy), stream=False)
    body = {"model": "healthy", "prompt": PROMPT, "stream": False, "options": SAMPLED}
    status, answer = tcp_daemon.post_json("/api/generate", body)
    assert status == 200 and answer["eval_count"] == N_TOKENS
    context = answer["context"]
    prompt, sampled = context[:-N_TOKENS], context[-N_TOKENS:]
    # the last sampled token not seen before it: everything up to it runs as in the healthy
    # model, then feeding it breaks the next step
    fresh = [i for i in range(2, N_TOKENS - 1) if sampled[i] not in prompt + sampled[:i]]
    assert fresh, sampled
    shutil.copy(healthy, folder / "broken.gguf")
    poison_token(folder / "broken.gguf", sampled[fresh[-1]])
    tcp_daemon.client.pull(str(folder / "broken.gguf"), stream=False)
    return "broken:latest"


def test_an_error_mid_stream_is_a_last_ndjson_line(tcp_daemon: Daemon, broken: str) -> None:
    body = {"model": broken, "prompt": PROMPT, "options": SAMPLED}
    status, lines = tcp_daemon.post_json("/api/generate", body)
    assert status == 200  # the stream had begun
    *pieces, last = lines
    assert pieces and all(not p["done"] and p["response"] for p in pieces)
    assert set(last) == {"error", "status"} and "NaN" in last["error"]
    with ollama.Client(host=f"http://{tcp_daemon.env['CORRAL_HOST']}") as client:
        stream = client.generate(broken, PROMPT, options=SAMPLED, stream=True)
        with pytest.raises(ollama.ResponseError, match="NaN"):
            for part in stream:
                assert part.response
    assert tcp_daemon.client.version()  # still serving


def test_an_error_mid_stream_is_a_last_sse_event(tcp_daemon: Daemon, broken: str) -> None:
    body = {"model": broken, "prompt": PROMPT, "stream": True, "max_tokens": N_TOKENS}
    status, raw, headers = tcp_daemon.raw(
        "POST", "/v1/completions", json.dumps({**body, "temperature": 0.9, "seed": 3})
    )
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    events = [e.removeprefix(b"data: ") for e in raw.split(b"\n\n") if e.strip()]
    *chunks, last = [json.loads(e) for e in events]  # no [DONE] after an error
    assert chunks and all(c["choices"][0]["text"] for c in chunks)
    assert "NaN" in last["error"]["message"] and last["error"]["type"] == "api_error"
    base_url = f"http://{tcp_daemon.env['CORRAL_HOST']}/v1"
    with openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0) as client:
        stream = client.completions.create(
            model=broken, prompt=PROMPT, max_tokens=N_TOKENS, temperature=0.9, seed=3, stream=True
        )
        with pytest.raises(openai.APIError, match="NaN"):
            for chunk in stream:
                assert chunk.choices[0].text


def test_shutdown_mid_stream_reaches_openai_clients_as_an_error(tmp_path: Path) -> None:
    model = write_tiny_llama(tmp_path / "long.gguf", context_length=131072, endless=True)
    with Daemon.start_in(tmp_path / "home") as daemon:
        daemon.client.pull(str(model), stream=False)
        over_socket = httpx.Client(transport=httpx.HTTPTransport(uds=str(daemon.socket_path)))
        with openai.OpenAI(
            base_url="http://localhost/v1", api_key="x", max_retries=0, http_client=over_socket
        ) as client:
            stream = client.chat.completions.create(
                model="long", messages=[{"role": "user", "content": "Talk on"}], stream=True
            )
            first = next(iter(stream))
            assert first.choices[0].delta.role == "assistant"
            daemon.process.send_signal(15)  # SIGTERM: running streams are cut short
            with pytest.raises(openai.APIError, match=SHUTDOWN):
                for _ in stream:
                    pass
        assert daemon.process.wait(30) == 0


def test_a_pull_failing_mid_stream_raises_with_the_errors_own_status(
    daemon: Daemon, file_server: tuple[Path, str]
) -> None:
    _, base = file_server
    statuses = []
    with pytest.raises(ResponseError) as caught:
        for progress in daemon.client.pull(f"{base}/missing.gguf"):
            statuses.append(progress.status)
    assert statuses  # the stream had begun (status 200) before the download failed
    assert caught.value.status == 400 and "404" in caught.value.message
