"""Fill-in-the-middle (/api/generate `suffix`) through a real daemon: the prompt is built
as llama.cpp's /infill builds it, from the FIM tokens the model's vocabulary has."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import openai
import pytest
import xllamacpp

import assets
from serving import Daemon
from tiny import SPECIALS, write_tiny_llama

FIM_TOKENS = ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>")
PRE, SUF, MID = (len(SPECIALS) + i for i in range(3))  # their ids in the tiny vocabulary
FIM_NAME = "fim:latest"
GREEDY = {"temperature": 0, "repeat_penalty": 1.0, "num_predict": 12}
PREFIX = "def area(r):\n    return "
SUFFIX = "\n\nprint(area(2))\n"


@pytest.fixture(scope="module")
def fim_daemon(tmp_path_factory: pytest.TempPathFactory, tcp_daemon: Daemon) -> Daemon:
    """The module's daemon (also on loopback TCP) with a tiny model whose vocabulary has
    FIM tokens and which never ends an answer by itself (every answer runs num_predict
    tokens, so the prompt is the `context` less the last `eval_count` tokens)."""
    path = tmp_path_factory.mktemp("fim") / "fim.gguf"
    write_tiny_llama(path, specials=(*SPECIALS, *FIM_TOKENS), endless=True)
    assert tcp_daemon.client.pull(str(path), stream=False).status == "success"
    return tcp_daemon


def generate(daemon: Daemon, **fields: Any) -> dict:
    body = {"model": FIM_NAME, "stream": False, "options": GREEDY, **fields}
    status, answer = daemon.post_json("/api/generate", body)
    assert status == 200, answer
    return answer


def test_the_infill_prompt_is_prefix_suffix_middle_in_llama_cpp_order(fim_daemon: Daemon) -> None:
    fim = generate(fim_daemon, prompt=PREFIX, suffix=SUFFIX)
    # the same tokens written out by hand, in raw mode (special tokens parsed from the text)
    literal = f"<|fim_prefix|>{PREFIX}<|fim_suffix|>{SUFFIX}<|fim_middle|>"
    raw = generate(fim_daemon, prompt=literal, raw=True)
    assert "context" not in raw  # as Ollama: raw answers carry none
    # 12 greedy tokens alike (the same prompt); the prompt's shape is checked below
    assert fim["response"] == raw["response"] and fim["eval_count"] == GREEDY["num_predict"]
    prompt = fim["context"][: len(fim["context"]) - fim["eval_count"]]
    assert prompt[0] == PRE and prompt[-1] == MID and prompt.count(SUF) == 1


def test_show_lists_insert_only_for_a_model_with_fim_tokens(
    fim_daemon: Daemon, tcp_tiny: str
) -> None:
    status, fim = fim_daemon.post_json("/api/show", {"model": FIM_NAME})
    assert status == 200 and fim["capabilities"] == ["completion", "insert"]
    status, plain = fim_daemon.post_json("/api/show", {"model": tcp_tiny})
    assert status == 200 and plain["capabilities"] == ["completion"]


def test_special_token_text_in_the_code_is_plain_text(fim_daemon: Daemon) -> None:
    fim = generate(fim_daemon, prompt="x = '<|fim_middle|>'", suffix="\n")
    prompt = fim["context"][: len(fim["context"]) - fim["eval_count"]]
    assert prompt.count(MID) == 1 and prompt[-1] == MID  # only the one corral put there


def test_an_empty_prefix_fills_in_and_streams(fim_daemon: Daemon) -> None:
    body = {"model": FIM_NAME, "prompt": "", "suffix": SUFFIX, "options": GREEDY}
    status, lines = fim_daemon.post_json("/api/generate", body)
    assert status == 200 and len(lines) > 1  # NDJSON: pieces, then the final line
    final = lines[-1]
    assert final["done_reason"] == "length" and final["context"][:2] == [PRE, SUF]
    alone = generate(fim_daemon, prompt="", suffix=SUFFIX)
    assert "".join(line["response"] for line in lines) == alone["response"]


def test_a_long_prefix_and_suffix_are_cut_next_to_the_gap(fim_daemon: Daemon) -> None:
    options = {**GREEDY, "num_ctx": 64, "num_predict": 4}  # half of 64: 24 prefix + 8 suffix
    head, tail = "A" * 100 + "<near", "far>" + "Z" * 100
    fim = generate(fim_daemon, prompt=head, suffix=tail, options=options)
    prompt = fim["context"][: len(fim["context"]) - fim["eval_count"]]
    assert len(prompt) == 1 + 24 + 1 + 8 + 1 and prompt.index(SUF) == 25
    assert "fill-in-the-middle input cut to 24 prefix and 8 suffix tokens (of 105 and 104)" in (
        fim_daemon.log()
    )
    huge = generate(fim_daemon, prompt="A" * 5_000_000 + "<near", suffix=tail, options=options)
    assert huge["context"][: len(prompt)] == prompt  # only its end was ever tokenized


def test_openai_completions_suffix_is_infill(fim_daemon: Daemon) -> None:
    base_url = f"http://{fim_daemon.env['CORRAL_HOST']}/v1"
    with openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0) as client:
        answer = client.completions.create(
            model=FIM_NAME,
            prompt=PREFIX,
            suffix=SUFFIX,
            max_tokens=GREEDY["num_predict"],
            temperature=0,
        )
    options = {"temperature": 0, "num_predict": GREEDY["num_predict"]}  # as /v1 sets them
    native = generate(fim_daemon, prompt=PREFIX, suffix=SUFFIX, options=options)
    assert answer.choices[0].text == native["response"] != ""


@pytest.mark.slow
def test_qwen25_coder_fills_in_the_middle_as_llama_cpp_does(tmp_path: Path) -> None:
    model = assets.qwen25_coder_gguf()
    prefix, suffix = "def add(a, b):\n    return ", "\n\n\nprint(add(2, 3))\n"
    reference = llama_cpp_infill(model, prefix, suffix, n_predict=6)
    with Daemon.start_in(tmp_path / "home") as daemon:
        final = daemon.client.pull(str(model), stream=False)
        assert final.status == "success"
        name = next(m.name for m in daemon.client.list().models)
        options = {"temperature": 0, "num_predict": 6, "num_ctx": 512}
        body = {"model": name, "prompt": prefix, "suffix": suffix, "stream": False}
        status, answer = daemon.post_json("/api/generate", {**body, "options": options})
    assert status == 200, answer
    assert answer["prompt_eval_count"] == reference["tokens_evaluated"]
    assert answer["context"][-answer["eval_count"] :] == reference["tokens"]
    assert answer["response"] == reference["content"] and answer["response"].startswith("a + b")


def llama_cpp_infill(model: Path, prefix: str, suffix: str, n_predict: int) -> dict:
    """llama.cpp's own /infill answer (greedy) for the same file."""
    params = xllamacpp.CommonParams()
    params.model.path = str(model)
    params.n_ctx = 512
    params.n_parallel = 1
    params.cpuparams.n_threads = params.cpuparams_batch.n_threads = 2
    server = xllamacpp.Server(params)
    body = {
        "input_prefix": prefix,
        "input_suffix": suffix,
        "n_predict": n_predict,
        "temperature": 0,
        "return_tokens": True,
    }
    request = urllib.request.Request(
        server.listening_address + "/infill",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.load(response)
