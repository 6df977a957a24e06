"""Ollama's own Python client (ollama 0.6.x), unchanged, against `corral serve` on loopback TCP."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import ollama
import pytest

from serving import Daemon
from tiny import write_tiny_llama

GREEDY = {"temperature": 0, "num_predict": 6}


@pytest.fixture(scope="module")
def client(base_url: str) -> Iterator[ollama.Client]:
    with ollama.Client(host=base_url) as c:
        yield c


def norm(vector: list[float]) -> float:
    return math.sqrt(sum(x * x for x in vector))


def test_list_and_show(client: ollama.Client, tcp_tiny: str, tiny_gguf: Path) -> None:
    (entry,) = [m for m in client.list().models if m.model == tcp_tiny]
    assert entry.size == tiny_gguf.stat().st_size
    assert entry.digest == hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()
    assert entry.details.family == "llama" and entry.details.quantization_level == "F32"
    assert entry.modified_at is not None
    shown = client.show(tcp_tiny)
    assert shown.modelinfo["general.architecture"] == "llama"
    assert shown.modelinfo["llama.embedding_length"] == 64
    assert "<|im_start|>" in shown.template
    assert shown.capabilities == ["completion"]


def test_pull_a_url_streams_progress(
    client: ollama.Client, file_server: tuple[Path, str], tcp_daemon: Daemon
) -> None:
    folder, url = file_server
    write_tiny_llama(folder / "other.gguf", seed=7)
    statuses = [p.status for p in client.pull(f"{url}/other.gguf", stream=True)]
    assert statuses[-1] == "success"
    assert "installed as 127.0.0.1/library/other:latest" in statuses  # named after its host
    assert "127.0.0.1/library/other:latest" in {m.model for m in client.list().models}
    assert client.pull(f"{url}/other.gguf").status == "success"  # not streamed: the last


def test_tcp_clients_may_not_name_the_daemons_files(
    client: ollama.Client, tmp_path: Path, tcp_daemon: Daemon
) -> None:
    path = write_tiny_llama(tmp_path / "mine.gguf", seed=8)
    for pull in (lambda: client.pull(str(path)), lambda: client.pull(path.as_uri())):
        with pytest.raises(ollama.ResponseError) as refused:
            pull()
        assert refused.value.status_code == 403
        assert "Unix socket" in refused.value.error and "/api/blobs" in refused.value.error
    with pytest.raises(ollama.ResponseError) as refused:
        client.create("mine", from_=str(path))
    assert refused.value.status_code == 403
    assert "mine:latest" not in {m.model for m in client.list().models}
    # the same file through the Unix socket: this user's own programs may
    assert tcp_daemon.client.pull(str(path), stream=False).status == "success"


def test_generate_streamed_and_whole_agree(client: ollama.Client, tcp_tiny: str) -> None:
    *pieces, final = client.generate(tcp_tiny, "Hello there", options=GREEDY, stream=True)
    assert all(not p.done for p in pieces)
    assert (final.done, final.done_reason, final.eval_count) == (True, "length", 6)
    assert final.total_duration and final.prompt_eval_count and final.context
    whole = client.generate(tcp_tiny, "Hello there", options=GREEDY)
    assert whole.response == "".join(p.response for p in pieces)
    assert whole.context == final.context


def test_generate_continues_from_context(client: ollama.Client, tcp_tiny: str) -> None:
    first = client.generate(tcp_tiny, "Tell me", options=GREEDY)
    second = client.generate(tcp_tiny, "More", context=first.context, options=GREEDY)
    assert second.context[: len(first.context)] == first.context
    assert len(second.context) > len(first.context)
    fresh = client.generate(tcp_tiny, "More", options=GREEDY)
    assert len(fresh.context) < len(second.context)  # without context: a new conversation


def test_empty_prompt_loads_and_keep_alive_zero_unloads(
    client: ollama.Client, tcp_tiny: str
) -> None:
    assert client.generate(tcp_tiny, "").done_reason == "load"
    assert tcp_tiny in {m.model for m in client.ps().models}
    assert client.generate(tcp_tiny, "", keep_alive=0).done_reason == "unload"
    assert tcp_tiny not in {m.model for m in client.ps().models}


def test_chat_streamed_and_whole_agree(client: ollama.Client, tcp_tiny: str) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "And now?"},
    ]
    *pieces, final = client.chat(tcp_tiny, messages, options=GREEDY, stream=True)
    assert all(p.message.role == "assistant" for p in pieces)
    assert final.done and final.done_reason == "length"
    whole = client.chat(tcp_tiny, messages, options=GREEDY)
    assert whole.message.content == "".join(p.message.content for p in pieces)


def test_embed_returns_unit_vectors_and_embeddings_the_raw_one(
    client: ollama.Client, tcp_tiny: str
) -> None:
    batch = client.embed(tcp_tiny, ["the cat", "a dog"])
    a, b = batch.embeddings
    assert len(a) == len(b) == 64
    assert norm(a) == pytest.approx(1, abs=1e-5) and norm(b) == pytest.approx(1, abs=1e-5)
    assert a != b
    assert batch.prompt_eval_count > 0 and batch.total_duration > 0
    single = client.embed(tcp_tiny, "the cat").embeddings
    assert single[0] == pytest.approx(a, abs=1e-6)
    raw = client.embeddings(tcp_tiny, "the cat").embedding
    assert norm(raw) != pytest.approx(1, abs=1e-3)  # the older endpoint does not normalise
    assert [x / norm(raw) for x in raw] == pytest.approx(a, abs=1e-5)
    short = client.embed(tcp_tiny, "the cat", dimensions=16).embeddings[0]
    assert len(short) == 16 and norm(short) == pytest.approx(1, abs=1e-5)


def test_embed_truncates_unless_told_not_to(client: ollama.Client, tcp_tiny: str) -> None:
    long = "word " * 400  # the tiny model's window is 256 tokens
    cut = client.embed(tcp_tiny, long)
    assert cut.prompt_eval_count == 256 and len(cut.embeddings[0]) == 64
    with pytest.raises(ollama.ResponseError) as refused:
        client.embed(tcp_tiny, long, truncate=False)
    assert refused.value.status_code == 400
    assert "more than the context window of 256" in refused.value.error


def test_ps_shows_what_is_loaded(client: ollama.Client, tcp_tiny: str) -> None:
    client.generate(tcp_tiny, "Hi", options=GREEDY, keep_alive="10m")
    (entry,) = [m for m in client.ps().models if m.model == tcp_tiny]
    assert entry.name == tcp_tiny and entry.size > 0 and entry.size_vram == 0
    assert entry.details.family == "llama" and entry.context_length == 256
    assert len(entry.digest) == 64
    assert entry.expires_at > datetime.now(UTC)
    client.generate(tcp_tiny, "", keep_alive=-1)
    (forever,) = [m for m in client.ps().models if m.model == tcp_tiny]
    assert forever.expires_at.year > 2200  # kept until unloaded


def test_copy_then_delete(client: ollama.Client, tcp_tiny: str) -> None:
    assert client.copy(tcp_tiny, "alias:v1").status == "success"
    names = {m.model for m in client.list().models}
    assert {"alias:v1", tcp_tiny} <= names
    assert client.delete("alias:v1").status == "success"
    assert "alias:v1" not in {m.model for m in client.list().models}
    assert tcp_tiny in {m.model for m in client.list().models}  # the blob is shared, kept


def test_create_blob_uploads_and_verifies(
    client: ollama.Client, tcp_daemon: Daemon, base_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "blob.bin"
    path.write_bytes(b"corral blob " * 10_000)
    digest = client.create_blob(path)
    assert digest == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    stored = tcp_daemon.home / "blobs" / digest.replace(":", "-")
    assert stored.read_bytes() == path.read_bytes()
    assert httpx.head(f"{base_url}/api/blobs/{digest}").status_code == 200
    assert client.create_blob(path) == digest  # already there: accepted again


def test_errors_surface_as_response_errors(client: ollama.Client, tcp_tiny: str) -> None:
    with pytest.raises(ollama.ResponseError) as missing:
        client.generate("nope", "hi")
    assert missing.value.status_code == 404
    assert missing.value.error == "model 'nope' not found, try `corral pull nope`"
    with pytest.raises(ollama.ResponseError) as streamed_missing:
        list(client.chat("nope", [{"role": "user", "content": "hi"}], stream=True))
    assert streamed_missing.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as gone:
        client.delete("never-installed")
    assert gone.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as copy_missing:
        client.copy("nope", "other")
    assert copy_missing.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as fim:
        client.generate(tcp_tiny, "def f(", suffix="return x")
    assert fim.value.status_code == 400 and "does not support insert" in fim.value.error
    with pytest.raises(ollama.ResponseError) as images:
        client.generate(tcp_tiny, "what is this?", images=[b"\x89PNG not really"])
    assert images.value.status_code == 400 and "images" in images.value.error
