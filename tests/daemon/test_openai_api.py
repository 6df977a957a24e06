"""OpenAI's own Python client, unchanged, against corral's /v1 on loopback TCP.

/v1 is a translation onto the native handlers, so with greedy sampling its
answers must be the native answers, token for token.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from serving import Daemon
from tiny import write_tiny_llama

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hello there"},
]


@pytest.fixture(scope="module")
def client(base_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0) as c:
        yield c


def native_chat(tcp_daemon: Daemon, model: str, num_predict: int) -> dict:
    status, body = tcp_daemon.post_json(
        "/api/chat",
        {
            "model": model,
            "messages": MESSAGES,
            "stream": False,
            "options": {"temperature": 0, "num_predict": num_predict},
        },
    )
    assert status == 200
    return body


def test_models_list_and_retrieve(client: openai.OpenAI, tcp_tiny: str) -> None:
    models = {m.id: m for m in client.models.list()}
    assert models[tcp_tiny].object == "model"
    assert models[tcp_tiny].owned_by == "library" and models[tcp_tiny].created > 0
    assert client.models.retrieve(tcp_tiny).id == tcp_tiny
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("nope")
    assert missing.value.body["code"] == "model_not_found"


def test_chat_completion_is_the_native_chat_answer(
    client: openai.OpenAI, tcp_daemon: Daemon, tcp_tiny: str
) -> None:
    answer = client.chat.completions.create(
        model=tcp_tiny, messages=MESSAGES, temperature=0, max_tokens=6
    )
    native = native_chat(tcp_daemon, tcp_tiny, 6)
    (choice,) = answer.choices
    assert choice.message.role == "assistant"
    assert choice.message.content == native["message"]["content"]
    assert choice.finish_reason == "length"
    assert answer.object == "chat.completion" and answer.id.startswith("chatcmpl-")
    assert answer.model == tcp_tiny
    usage = answer.usage
    assert usage.completion_tokens == 6 and usage.prompt_tokens > 6
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_usage_counts_the_whole_prompt_even_when_its_cache_is_reused(
    client: openai.OpenAI, tcp_tiny: str
) -> None:
    ask = {"model": tcp_tiny, "messages": MESSAGES, "temperature": 0, "max_tokens": 2}
    first = client.chat.completions.create(**ask).usage
    again = client.chat.completions.create(**ask).usage  # same prompt: its KV cache is reused
    assert again.prompt_tokens == first.prompt_tokens


def test_developer_role_and_text_parts(client: openai.OpenAI, tcp_tiny: str) -> None:
    def answer(messages: list) -> str:
        reply = client.chat.completions.create(
            model=tcp_tiny, messages=messages, temperature=0, max_tokens=6
        )
        return reply.choices[0].message.content

    parts = [{"type": "text", "text": "Hello"}, {"type": "text", "text": "there"}]
    translated = answer(
        [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": parts}]
    )
    plain = answer(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello\nthere"}]
    )
    assert translated == plain


def test_chat_stream_chunks_and_usage(client: openai.OpenAI, tcp_tiny: str) -> None:
    whole = client.chat.completions.create(
        model=tcp_tiny, messages=MESSAGES, temperature=0, max_completion_tokens=8
    )
    chunks = list(
        client.chat.completions.create(
            model=tcp_tiny,
            messages=MESSAGES,
            temperature=0,
            max_completion_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    *content, finish, usage = chunks
    assert len({c.id for c in chunks}) == 1 and chunks[0].object == "chat.completion.chunk"
    assert content[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in content) == (
        whole.choices[0].message.content
    )
    assert all(c.choices[0].finish_reason is None for c in content)
    assert finish.choices[0].finish_reason == "length"
    assert usage.choices == [] and usage.usage.completion_tokens == 8
    plain = list(
        client.chat.completions.create(
            model=tcp_tiny, messages=MESSAGES, temperature=0, max_tokens=3, stream=True
        )
    )
    assert all(c.usage is None for c in plain)
    assert plain[-1].choices[0].finish_reason == "length"


def test_stop_and_seed(client: openai.OpenAI, tcp_tiny: str) -> None:
    ask = {"model": tcp_tiny, "messages": MESSAGES, "max_tokens": 30}
    free = client.chat.completions.create(temperature=0, **ask).choices[0].message.content
    stop = free[3:5]
    cut = client.chat.completions.create(temperature=0, stop=[stop], **ask).choices[0]
    assert cut.finish_reason == "stop" and stop not in cut.message.content
    assert free.startswith(cut.message.content)
    seeded = [
        client.chat.completions.create(temperature=1.5, seed=42, **ask).choices[0].message.content
        for _ in range(2)
    ]
    assert seeded[0] == seeded[1]
    other = client.chat.completions.create(temperature=1.5, seed=43, **ask)
    assert other.choices[0].message.content != seeded[0]


def test_penalties_are_ignored_with_a_warning(
    client: openai.OpenAI, tcp_daemon: Daemon, tcp_tiny: str
) -> None:
    answer = client.chat.completions.create(
        model=tcp_tiny, messages=MESSAGES, max_tokens=2, frequency_penalty=0.5
    )  # answered (the tiny model may end its answer by itself within 2 tokens)
    assert answer.choices[0].finish_reason in ("length", "stop")
    assert answer.usage.completion_tokens <= 2
    tcp_daemon.wait_for_log("ignoring unsupported option(s): frequency_penalty")


def test_completions_are_the_native_generate_answer(
    client: openai.OpenAI, tcp_daemon: Daemon, tcp_tiny: str
) -> None:
    options = {"temperature": 0, "num_predict": 6}
    status, native = tcp_daemon.post_json(
        "/api/generate", {"model": tcp_tiny, "prompt": "Once", "stream": False, "options": options}
    )
    assert status == 200
    whole = client.completions.create(model=tcp_tiny, prompt="Once", temperature=0, max_tokens=6)
    assert whole.object == "text_completion" and whole.id.startswith("cmpl-")
    assert whole.choices[0].text == native["response"]
    assert whole.choices[0].finish_reason == "length" and whole.usage.completion_tokens == 6
    chunks = list(
        client.completions.create(
            model=tcp_tiny,
            prompt="Once",
            temperature=0,
            max_tokens=6,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == native["response"]
    assert chunks[-1].usage.total_tokens == whole.usage.total_tokens


def test_embeddings_are_the_native_embeddings(
    client: openai.OpenAI, tcp_daemon: Daemon, tcp_tiny: str
) -> None:
    status, native = tcp_daemon.post_json(
        "/api/embed", {"model": tcp_tiny, "input": ["one", "two words"]}
    )
    assert status == 200
    default = client.embeddings.create(model=tcp_tiny, input=["one", "two words"])  # base64
    floats = client.embeddings.create(
        model=tcp_tiny, input=["one", "two words"], encoding_format="float"
    )
    for answer in (default, floats):
        assert [d.index for d in answer.data] == [0, 1]
        for got, want in zip(answer.data, native["embeddings"], strict=True):
            assert got.embedding == pytest.approx(want, abs=1e-6)
        assert answer.usage.prompt_tokens == native["prompt_eval_count"]
    short = client.embeddings.create(model=tcp_tiny, input="one", dimensions=8)
    assert len(short.data[0].embedding) == 8


def test_errors_have_openai_shape_and_status(client: openai.OpenAI, tcp_tiny: str) -> None:
    one = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="nope", messages=one)
    assert missing.value.body == {
        "message": "model 'nope' not found, try `corral pull nope`",
        "type": "not_found_error",
        "param": None,
        "code": "model_not_found",
    }
    with pytest.raises(openai.NotFoundError):
        list(client.chat.completions.create(model="nope", messages=one, stream=True))
    refused = (
        ({"n": 2}, "n"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"logit_bias": {"42": 5}}, "logit_bias"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages"),
        ({"messages": [{"role": "assistant", "tool_calls": [{"id": "1"}]}]}, "messages"),
    )
    for extra, param in refused:
        with pytest.raises(openai.BadRequestError) as bad:
            client.chat.completions.create(**{"model": tcp_tiny, "messages": one, **extra})
        assert bad.value.body["param"] == param and bad.value.body["type"] == (
            "invalid_request_error"
        )
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    with pytest.raises(openai.BadRequestError, match="tool calling"):
        client.chat.completions.create(model=tcp_tiny, messages=one, tools=tools)
    with pytest.raises(openai.BadRequestError, match="suffix"):
        client.completions.create(model=tcp_tiny, prompt="def f(", suffix="return 1")
    with pytest.raises(openai.BadRequestError, match="'prompt' must be one"):
        client.completions.create(model=tcp_tiny, prompt=["a", "b"])
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="nope", input="x")


def test_malformed_bodies_and_unknown_routes(base_url: str, tcp_tiny: str) -> None:
    bad_type = httpx.post(
        f"{base_url}/v1/chat/completions",
        json={"model": tcp_tiny, "messages": [], "temperature": "hot"},
    )
    assert bad_type.status_code == 400
    assert (
        bad_type.json()["error"]["message"] == "field 'temperature' must be a number, got a string"
    )
    not_json = httpx.post(f"{base_url}/v1/completions", content=b"{nope")
    assert not_json.status_code == 400 and not_json.json()["error"]["message"].startswith(
        "invalid JSON"
    )
    unknown = httpx.get(f"{base_url}/v1/nothing")
    assert unknown.status_code == 404
    assert set(unknown.json()["error"]) == {"message", "type", "param", "code"}
    native = httpx.get(f"{base_url}/api/nothing")  # outside /v1 errors keep Ollama's shape
    assert native.status_code == 404 and isinstance(native.json()["error"], str)


def test_stream_is_server_sent_events_ending_with_done(base_url: str, tcp_tiny: str) -> None:
    body = {"model": tcp_tiny, "prompt": "Hi", "max_tokens": 3, "stream": True}
    with httpx.stream("POST", f"{base_url}/v1/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    assert all(json.loads(e[6:])["object"] == "text_completion" for e in events[:-1])


def test_a_client_leaving_a_stream_stops_its_generation(
    client: openai.OpenAI, tcp_daemon: Daemon, tmp_path: Path
) -> None:
    long = write_tiny_llama(tmp_path / "endless.gguf", context_length=1 << 20, endless=True)
    assert tcp_daemon.client.pull(str(long), stream=False).status == "success"
    ended = tcp_daemon.log().count("generation ended (cancel)")
    stream = client.chat.completions.create(  # no max_tokens: runs until num_ctx is full
        model="endless", messages=MESSAGES, stream=True
    )
    assert next(iter(stream)).choices[0].delta.role == "assistant"
    stream.close()
    tcp_daemon.wait_for_log("generation ended (cancel)", ended + 1)


def test_logprobs_in_openais_shapes(client: openai.OpenAI, tcp_tiny: str) -> None:
    ask = {"model": tcp_tiny, "messages": MESSAGES, "max_tokens": 8, "temperature": 0}
    answer = client.chat.completions.create(logprobs=True, top_logprobs=2, **ask).choices[0]
    content = answer.logprobs.content
    joined = b"".join(bytes(t.bytes) for t in content).decode(errors="replace")
    assert content and joined == answer.message.content
    for t in content:  # the likeliest first (the chosen one may differ: repeat_penalty)
        assert len(t.top_logprobs) == 2 and t.logprob <= t.top_logprobs[0].logprob <= 0
        assert t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob
    streamed = client.chat.completions.create(logprobs=True, stream=True, **ask)
    tokens = [
        t.token
        for c in streamed
        if c.choices and c.choices[0].logprobs
        for t in c.choices[0].logprobs.content
    ]
    assert tokens == [t.token for t in content]
    assert client.chat.completions.create(**ask).choices[0].logprobs is None
    legacy = client.completions.create(
        model=tcp_tiny, prompt="Once", max_tokens=6, temperature=0, logprobs=2
    ).choices[0]
    lp = legacy.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 6
    assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)
    assert lp.text_offset[-1] < len(legacy.text)
    assert all(len(top) == 2 for top in lp.top_logprobs)  # bytes:\xNN keys stay apart
    chunks = client.completions.create(
        model=tcp_tiny, prompt="Once", max_tokens=6, temperature=0, logprobs=2, stream=True
    )
    offsets = [
        o
        for c in chunks
        if c.choices and c.choices[0].logprobs
        for o in c.choices[0].logprobs.text_offset
    ]
    assert offsets == lp.text_offset  # streamed, counted from the whole completion
    with pytest.raises(openai.BadRequestError, match="top_logprobs"):
        client.chat.completions.create(top_logprobs=2, **ask)  # without logprobs


def test_streamed_chunks_say_usage_null_only_when_usage_was_asked_for(
    tcp_daemon: Daemon, tcp_tiny: str
) -> None:
    body = {
        "model": tcp_tiny,
        "messages": MESSAGES,
        "max_tokens": 4,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    for path, extra in (("/v1/chat/completions", {}), ("/v1/completions", {"prompt": "Once"})):
        for include_usage in (True, False):
            sent = body | extra | {"stream_options": {"include_usage": include_usage}}
            status, raw, _ = tcp_daemon.raw("POST", path, json.dumps(sent))
            events = [line[6:] for line in raw.decode().splitlines() if line.startswith("data: ")]
            chunks = [json.loads(e) for e in events if e != "[DONE]"]
            assert status == 200 and len(chunks) > 2
            if include_usage:
                assert all(c["usage"] is None for c in chunks[:-1]) and chunks[-1]["usage"]
            else:
                assert not any("usage" in c for c in chunks)
