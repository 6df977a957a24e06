"""The daemon's endpoints against a real `corral serve` process and the tiny model."""

from __future__ import annotations

import hashlib
import json
import re
from importlib import metadata
from pathlib import Path

from corral.client.api import ChatResponse, GenerateResponse, parse_time
from serving import Daemon
from tiny import write_tiny_llama

GREEDY = {"temperature": 0, "num_predict": 6}
METRICS = (
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
)


def test_root_answers_get_and_head(daemon: Daemon) -> None:
    status, body, _ = daemon.raw("GET", "/")
    assert (status, body) == (200, b"corral is running")
    status, body, _ = daemon.raw("HEAD", "/")
    assert (status, body) == (200, b"")


def test_version_is_an_ollama_release_and_the_installed_distribution(daemon: Daemon) -> None:
    status, body, _ = daemon.raw("GET", "/api/version")
    answer = json.loads(body)
    assert status == 200 and answer["corral"] == metadata.version("corral")
    ollama_release = tuple(int(part) for part in answer["version"].split("."))
    assert ollama_release >= (0, 6, 4)  # the minimum VS Code's Copilot accepts
    assert daemon.client.version() == metadata.version("corral")


def test_tags_lists_the_pulled_model(daemon: Daemon, tiny: str, tiny_gguf: Path) -> None:
    (entry,) = [m for m in daemon.client.list().models if m.name == tiny]
    assert entry.model == tiny
    assert entry.size == tiny_gguf.stat().st_size
    assert entry.digest == hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()
    assert entry.details.format == "gguf"
    assert entry.details.family == "llama"
    assert entry.details.quantization_level == "F32"
    assert parse_time(entry.modified_at).tzinfo is not None


def test_show_reports_metadata_template_and_manifest(daemon: Daemon, tiny: str) -> None:
    info = daemon.client.show(tiny)
    assert info.model_info["general.architecture"] == "llama"
    assert info.model_info["llama.context_length"] == 256
    assert info.model_info["llama.embedding_length"] == 64
    assert info.model_info["tokenizer.ggml.tokens"] is None  # bulky: only when verbose
    assert "<|im_start|>" in info.template
    assert "sha256:" in info.modelfile and "architecture: llama" in info.modelfile
    assert info.details.parameter_size
    verbose = daemon.client.show(tiny, verbose=True)
    assert verbose.model_info["tokenizer.ggml.tokens"][:3] == [
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
    ]


def test_each_answered_request_is_a_log_line_with_its_duration(daemon: Daemon) -> None:
    daemon.client.list()
    line = daemon.wait_for_log('"GET /api/tags HTTP/1.1" 200 ')
    assert re.search(r'"GET /api/tags HTTP/1\.1" 200 \d+ \d+\.\d+s ', line), line


def test_generate_streams_pieces_then_statistics(daemon: Daemon, tiny: str) -> None:
    parts = list(daemon.client.generate(tiny, "Hello there", options=GREEDY))
    *pieces, final = parts
    assert all(isinstance(p, GenerateResponse) and not p.done for p in pieces)
    assert all(p.model == tiny and p.created_at for p in parts)
    assert (final.done, final.done_reason, final.eval_count) == (True, "length", 6)
    assert "".join(p.response for p in pieces)
    for name in METRICS:
        value = getattr(final, name)
        assert isinstance(value, int) and value > 0, name


def test_generate_without_streaming_aggregates_the_same_text(daemon: Daemon, tiny: str) -> None:
    streamed = "".join(p.response for p in daemon.client.generate(tiny, "Hi", options=GREEDY))
    whole = daemon.client.generate(tiny, "Hi", options=GREEDY, stream=False)
    assert whole.done and whole.response == streamed
    assert whole.eval_count and whole.prompt_eval_count


def test_raw_generate_skips_the_template(daemon: Daemon, tiny: str) -> None:
    templated = daemon.client.generate(tiny, "abc", options=GREEDY, stream=False)
    raw = daemon.client.generate(tiny, "abc", raw=True, options=GREEDY, stream=False)
    assert raw.prompt_eval_count < templated.prompt_eval_count  # no ChatML wrapping


def test_chat_streams_assistant_messages(daemon: Daemon, tiny: str) -> None:
    history = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": "How are you?"},
    ]
    *pieces, final = daemon.client.chat(tiny, history, options=GREEDY)
    assert all(isinstance(p, ChatResponse) and p.message.role == "assistant" for p in pieces)
    assert final.done and final.message.content == ""
    whole = daemon.client.chat(tiny, history, options=GREEDY, stream=False)
    assert whole.message.content == "".join(p.message.content for p in pieces)


def test_stop_strings_end_the_answer(daemon: Daemon, tiny: str) -> None:
    free = daemon.client.generate(
        tiny, "x", raw=True, options={"temperature": 0, "num_predict": 40}, stream=False
    )
    assert len(free.response) > 4
    stop = free.response[2:4]
    cut = daemon.client.generate(
        tiny,
        "x",
        raw=True,
        options={"temperature": 0, "num_predict": 40, "stop": [stop]},
        stream=False,
    )
    assert cut.done_reason == "stop"
    assert stop not in cut.response and free.response.startswith(cut.response)


def test_empty_prompt_loads_and_keep_alive_zero_unloads(daemon: Daemon, tiny: str) -> None:
    loaded = daemon.client.generate(tiny, "", stream=False)
    assert (loaded.done, loaded.done_reason, loaded.response) == (True, "load", "")
    unloaded = daemon.client.generate(tiny, "", keep_alive=0, stream=False)
    assert unloaded.done_reason == "unload"
    daemon.wait_for_log("unloaded ")


def test_keep_alive_zero_unloads_after_the_request(daemon: Daemon, tiny: str) -> None:
    before = daemon.log().count("unloaded ")
    daemon.client.generate(tiny, "Hi", options=GREEDY, keep_alive=0, stream=False)
    daemon.wait_for_log("unloaded ")
    assert daemon.log().count("unloaded ") == before + 1


def test_unknown_options_are_ignored_with_a_warning(daemon: Daemon, tiny: str) -> None:
    status, body = daemon.post_json(
        "/api/generate",
        {"model": tiny, "prompt": "Hi", "stream": False, "options": {"mirostat": 2, **GREEDY}},
    )
    assert status == 200 and body["done"]
    assert "ignoring unsupported option(s): mirostat" in daemon.log()


def test_deleting_one_name_keeps_its_blob_loaded_for_the_others(daemon: Daemon, tiny: str) -> None:
    daemon.client.generate(tiny, "", stream=False)  # loaded
    daemon.client.copy(tiny, "alias-of-tiny")
    daemon.client.delete("alias-of-tiny")
    assert tiny in {m.name for m in daemon.client.ps().models}


def test_delete_removes_the_model_and_its_blob(daemon: Daemon, tiny_gguf: Path) -> None:
    copy = tiny_gguf.with_name("doomed.gguf")
    copy.write_bytes(tiny_gguf.read_bytes() + b"")  # same blob as tiny: shared, kept
    daemon.client.pull(str(copy), stream=False)
    assert "doomed:latest" in {m.name for m in daemon.client.list().models}
    daemon.client.delete("doomed")
    names = {m.name for m in daemon.client.list().models}
    assert "doomed:latest" not in names
    blobs = sorted(p.name for p in (daemon.home / "blobs").iterdir() if p.is_file())
    digest = hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()
    assert f"sha256-{digest}" in blobs  # still used by tiny


def test_a_loaded_blob_that_loses_its_last_name_is_unloaded(
    daemon: Daemon, tiny: str, tmp_path: Path
) -> None:
    """A create (or pull) giving the only name of a loaded blob another blob collects the
    old one: its model goes at once, not after its keep_alive, shown in `ps` under a name
    that now means another model. A delete does the same."""
    other = write_tiny_llama(tmp_path / "replaced.gguf", seed=1)
    old = hashlib.sha256(other.read_bytes()).hexdigest()
    for remove in ("create", "delete"):
        daemon.client.pull(str(other), stream=False)  # installed as replaced:latest
        daemon.client.generate("replaced", "", keep_alive="1h", stream=False)  # loaded
        assert old in {m.digest for m in daemon.client.ps().models}
        if remove == "create":
            assert daemon.client.create("replaced", from_=tiny, stream=False).status == "success"
        else:
            daemon.client.delete("replaced")
        assert old not in {m.digest for m in daemon.client.ps().models}
        assert not (daemon.home / "blobs" / f"sha256-{old}").exists()
    assert daemon.log().count("unloaded replaced:latest") == 2


def test_show_puts_a_chats_system_and_options_in_the_modelfile(daemon: Daemon, tiny: str) -> None:
    """As Ollama's /api/show: for `/show modelfile` in a chat with /set system and
    /set parameter; `parameters` stays the model's own."""
    shown = daemon.client.show(tiny, system="Be a pirate.", options={"top_k": 7})
    assert shown.system == "Be a pirate."
    assert "\nSYSTEM Be a pirate.\n" in shown.modelfile
    assert "PARAMETER top_k 7" in shown.modelfile and "top_k" not in shown.parameters
    plain = daemon.client.show(tiny)
    assert "Be a pirate." not in plain.modelfile and "top_k" not in plain.modelfile


def test_show_leaves_out_arrays_too_long_to_send(daemon: Daemon, tmp_path: Path) -> None:
    """An uploaded file's array of millions of items cost ~20 bytes of daemon memory per
    byte of file to send; long arrays are null, as the vocabulary's are without verbose."""
    arrays = {"test.short": range(10), "test.long": range(5000), "test.huge": range(1_100_000)}
    path = write_tiny_llama(tmp_path / "arrays.gguf", extra_arrays=arrays)
    daemon.client.pull(str(path), stream=False)
    plain = daemon.client.show("arrays").model_info
    assert plain["test.short"] == list(range(10))
    assert plain["test.long"] is None and plain["test.huge"] is None
    verbose = daemon.client.show("arrays", verbose=True).model_info
    assert verbose["test.long"] == list(range(5000)) and verbose["test.huge"] is None
    assert len(verbose["tokenizer.ggml.tokens"]) > 0
