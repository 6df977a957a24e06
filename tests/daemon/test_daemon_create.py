"""POST /api/create on a real `corral serve`: streamed steps, statuses, Ollama's own client."""

from __future__ import annotations

import hashlib
from pathlib import Path

import ollama
import pytest
import yaml

from serving import Daemon

GREEDY = {"temperature": 0, "num_predict": 4}
TEMPLATE = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"


def names(daemon: Daemon) -> set[str]:
    return {m.name for m in daemon.client.list().models}


def test_create_streams_its_steps_and_sets_every_field(daemon: Daemon, tiny: str) -> None:
    body = {
        "model": "helper",
        "from": tiny,
        "system": "You are terse.",
        "template": TEMPLATE,
        "parameters": {"temperature": 0.2, "stop": ["</s>"]},
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}],
        "license": ["mit", "and more"],
    }
    status, lines = daemon.post_json("/api/create", body)
    assert status == 200
    statuses = [line["status"] for line in lines]
    assert statuses[0].startswith("using existing layer sha256:")
    assert statuses[-2:] == ["writing manifest", "success"]
    shown = daemon.client.show("helper")
    assert (shown.system, shown.template, shown.license) == (
        "You are terse.",
        TEMPLATE,
        "mit\n\nand more",
    )
    assert [(m.role, m.content) for m in shown.messages] == [("user", "Hi"), ("assistant", "Yo")]
    assert "temperature" in shown.parameters and '"</s>"' in shown.parameters
    assert "\nFROM helper:latest\n" in shown.modelfile
    assert "\nSYSTEM You are terse.\n" in shown.modelfile
    assert shown.modelfile.endswith('\nLICENSE """mit\n\nand more"""\n')
    listed = {m.name: m.digest for m in daemon.client.list().models}
    assert listed["helper:latest"] == listed[tiny]  # the same file, not a copy
    answer = daemon.client.generate("helper", "Hello", stream=False, options=GREEDY)
    assert answer.done and answer.eval_count


def test_generate_prompts_with_the_models_example_messages(daemon: Daemon, tiny: str) -> None:
    """As Ollama's /api/generate: system, the Modelfile's MESSAGE turns, then the prompt
    (a `context` continues without them)."""
    body = {
        "model": "fewshot",
        "from": tiny,
        "system": "Be terse.",
        "template": TEMPLATE,
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}],
    }
    assert daemon.post_json("/api/create", body)[0] == 200
    templated = daemon.client.generate("fewshot", "Hello", stream=False, options=GREEDY)
    text = "[system] Be terse.\n[user] Hi\n[assistant] Yo\n[user] Hello\n"
    raw = daemon.client.generate(tiny, text, raw=True, stream=False, options=GREEDY)
    # the second prompt ran only its last token: the cache held the first, token for token
    assert templated.prompt_eval_count > 10 and raw.prompt_eval_count == 1
    assert raw.response == templated.response


def test_create_quantizes_and_the_result_runs(daemon: Daemon, tiny: str) -> None:
    status, lines = daemon.post_json(
        "/api/create", {"model": "tiny-q4", "from": tiny, "quantize": "q4_k_m"}
    )
    assert status == 200 and lines[-1] == {"status": "success"}
    quantizing = [x for x in lines if x["status"] == "quantizing F32 model to Q4_K_M"]
    assert quantizing and quantizing[-1]["completed"] == quantizing[-1]["total"] > 0
    assert any(x["status"].startswith("creating new layer sha256:") for x in lines)
    shown = daemon.client.show("tiny-q4")
    assert shown.details.quantization_level == "Q4_K_M"
    answer = daemon.client.generate("tiny-q4", "Hello", stream=False, options=GREEDY)
    assert answer.done and answer.eval_count


def test_older_clients_send_modelfile_text_and_its_path(
    daemon: Daemon, tiny: str, tiny_gguf: Path
) -> None:
    text = "FROM ./tiny.gguf\nPARAMETER seed 42\nSYSTEM hi\n"
    request = {"name": "old", "modelfile": text, "path": str(tiny_gguf.parent / "Modelfile")}
    status, answer = daemon.post_json("/api/create", request | {"stream": False})
    assert (status, answer) == (200, {"status": "success"})
    shown = daemon.client.show("old")
    assert shown.system == "hi" and "seed" in shown.parameters
    fields = yaml.safe_load(daemon.client.show("old", modelfile_format="yaml").modelfile)
    assert fields["from"] == "old:latest" and fields["parameters"] == {"seed": 42}
    overridden = {"model": "old2", "modelfile": "FROM old\nSYSTEM a\n", "system": "b"}
    assert daemon.post_json("/api/create", overridden | {"stream": False})[0] == 200
    assert daemon.client.show("old2").system == "b"  # request fields win over the text


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"quantize": "Q9"}, 400, "unknown quantization type 'Q9'; choose one of: F32,"),
        ({"from": "nope"}, 404, "model 'nope' in FROM is neither installed nor in the catalog"),
        ({"from": None, "modelfile": "FROM {tiny}\nPARAMETER foo 1\n"}, 400,
         "Modelfile line 2: unknown parameter 'foo'"),
        ({"from": None, "modelfile": 'FROM {tiny}\nSYSTEM """open\n'}, 400,
         'Modelfile line 2: the """ opened here is never closed'),
        ({"from": None}, 400, "no 'from': say which model to start from"),
        ({"model": ""}, 400, "missing 'model'"),
        ({"model": "../x"}, 400, "invalid model name '../x'"),
        ({"adapters": {"a.gguf": "sha256:" + "0" * 64}}, 400, "adapters (LoRA) are not supported"),
        ({"parameters": {"top_k": "high"}}, 400, "parameter 'top_k' must be an integer"),
        ({"template": "{{ if .Prompt }}"}, 400, "not a valid Go template as in Ollama's"),
        ({"from": None, "files": {"m.gguf": "sha256:" + "0" * 64}}, 400, "was not uploaded"),
        ({"from": "./relative.gguf"}, 400, "is a relative path"),
        ({"from": "/no/such.gguf"}, 400, "file /no/such.gguf not found"),
    ],
)  # fmt: skip
def test_bad_requests_get_their_status_and_register_nothing(
    daemon: Daemon, tiny: str, body: dict, status: int, error: str
) -> None:
    before = names(daemon)
    request = {"model": "broken", "from": tiny} | body
    if "modelfile" in request:
        request["modelfile"] = request["modelfile"].replace("{tiny}", tiny)
    got, answer = daemon.post_json(
        "/api/create", {k: v for k, v in request.items() if v is not None}
    )
    assert got == status and error in answer["error"], answer
    assert "\n" not in answer["error"]
    assert names(daemon) == before


def test_show_modelfile_syntaxes(daemon: Daemon, tiny: str) -> None:
    classic = daemon.client.show(tiny).modelfile
    assert f"\nFROM {tiny}\n" in classic
    fields = yaml.safe_load(daemon.client.show(tiny, modelfile_format="yaml").modelfile)
    assert fields["from"] == tiny
    status, answer = daemon.post_json("/api/show", {"model": tiny, "modelfile_format": "toml"})
    assert status == 400 and "'modelfile_format' must be 'ollama' or 'yaml'" in answer["error"]


# ----- Ollama's own Python client, over loopback TCP --------------------------------------


@pytest.fixture(scope="module")
def client(base_url: str) -> ollama.Client:
    return ollama.Client(host=base_url)


def test_ollama_client_creates_from_a_model(client: ollama.Client, tcp_tiny: str) -> None:
    result = client.create(
        "pirate",
        from_=tcp_tiny,
        system="Talk like a pirate.",
        parameters={"temperature": 0.5, "stop": ["</s>"]},
        messages=[{"role": "user", "content": "Ahoy"}],
    )
    assert result.status == "success"
    shown = client.show("pirate")
    assert "\nSYSTEM Talk like a pirate.\n" in (shown.modelfile or "")
    assert "temperature" in (shown.parameters or "")
    events = client.create("pirate-q8", from_="pirate", quantize="Q8_0", stream=True)
    statuses = [p.status for p in events]
    assert statuses[-1] == "success" and "quantizing F32 model to Q8_0" in statuses
    with pytest.raises(ollama.ResponseError) as missing:
        client.create("x", from_="no-such-model")
    assert missing.value.status_code == 404


def test_ollama_client_creates_from_an_uploaded_file(
    client: ollama.Client, tcp_tiny: str, tiny_gguf: Path
) -> None:
    digest = client.create_blob(tiny_gguf)
    assert digest == "sha256:" + hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()
    assert client.create("uploaded", files={"tiny.gguf": digest}).status == "success"
    (entry,) = [m for m in client.list().models if m.model == "uploaded:latest"]
    assert entry.digest == digest.removeprefix("sha256:")
