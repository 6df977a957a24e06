"""The official clients against a real model: SmolLM2-135M answers through /v1, and its
embedding is the one llama.cpp (what Ollama runs) computes for a decoder model."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import ollama
import openai
import pytest
import xllamacpp

from corral.runtime.gguf import GGUFFile

pytestmark = pytest.mark.slow

TEXT = "The sky is blue because of Rayleigh scattering."


def llama_cpp_token_embeddings(model: Path, text: str) -> np.ndarray:
    """llama.cpp's per-token embeddings (T, d) with no pooling: a decoder model's default,
    from which Ollama takes the last token's."""
    params = xllamacpp.CommonParams()
    params.model.path = str(model)
    params.n_ctx = 512
    params.n_parallel = 1
    params.cpuparams.n_threads = params.cpuparams_batch.n_threads = 2
    params.embedding = True
    params.pooling_type = xllamacpp.llama_pooling_type.LLAMA_POOLING_TYPE_NONE
    server = xllamacpp.Server(params)
    body = json.dumps({"content": text}).encode()
    request = urllib.request.Request(
        server.listening_address + "/embedding",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        answer: Any = json.load(response)
    return np.array(answer[0]["embedding"])


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_smollm2_through_both_clients(
    base_url: str, smollm2_path: Path, file_server: tuple[Path, str]
) -> None:
    folder, url = file_server
    os.link(smollm2_path, folder / smollm2_path.name)  # served over HTTP: a TCP client's pull
    with ollama.Client(host=base_url) as native:
        statuses = [p.status for p in native.pull(f"{url}/{smollm2_path.name}", stream=True)]
        assert statuses[-1] == "success"
        installed = next(s for s in statuses if s.startswith("installed as "))
        name = installed.removeprefix("installed as ")
        raw = np.array(native.embeddings(name, TEXT).embedding)
        unit = np.array(native.embed(name, TEXT).embeddings[0])
        options = {"temperature": 0, "num_predict": 4}
        first = native.generate(name, "Name a colour.", options=options)
        second = native.generate(name, "Another?", context=first.context, options=options)
    turn = second.context[len(first.context) :]  # the second turn's prompt, then its answer
    with GGUFFile.open(smollm2_path) as gguf:
        tokens = gguf.metadata["tokenizer.ggml.tokens"]
    # SmolLM2's BOS text is <|im_start|>, which its template writes at every turn's start
    # (it adds no BOS itself): the continued turn keeps it
    assert tokens[turn[0]] == "<|im_start|>"

    with openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0) as client:
        answer = client.chat.completions.create(
            model=name,
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            temperature=0,
            max_tokens=20,
        )
    assert "Paris" in answer.choices[0].message.content
    assert answer.usage.prompt_tokens > 10

    reference = llama_cpp_token_embeddings(smollm2_path, TEXT)  # (T, 576)
    assert raw.shape == (576,)
    assert cosine(raw, reference[-1]) > 0.999  # the last token's final-normed state
    assert cosine(raw, reference.mean(axis=0)) < 0.99  # not a mean over the tokens
    np.testing.assert_allclose(unit, raw / np.linalg.norm(raw), atol=1e-5)
