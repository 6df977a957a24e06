"""`AsyncClient` against a real daemon: every endpoint, streams, errors and closing."""

from __future__ import annotations

import asyncio
import inspect
import typing
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from corral.client.aio import AsyncClient
from corral.client.http import Client, DaemonNotRunning, DaemonUnreachable, ResponseError
from serving import Daemon
from tiny import write_tiny_llama

T = TypeVar("T")
GREEDY = {"temperature": 0, "num_predict": 4, "repeat_penalty": 1.0}
HI = [{"role": "user", "content": "Hi"}]


def run(work: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(work)


@pytest.fixture(scope="module")
def talker(daemon: Daemon, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny model that never stops by itself: every answer has num_predict tokens."""
    path = write_tiny_llama(tmp_path_factory.mktemp("talker") / "talker.gguf", endless=True)
    daemon.client.pull(str(path), stream=False)
    return "talker"


def test_generate_and_chat_stream_as_the_sync_client_does(daemon: Daemon, talker: str) -> None:
    async def work() -> None:
        async with AsyncClient(str(daemon.socket_path)) as client:
            parts = [p async for p in await client.generate(talker, "Hi", options=GREEDY)]
            whole = await client.generate(talker, "Hi", options=GREEDY, stream=False)
            assert parts[-1].done and "".join(p.response for p in parts) == whole.response
            assert (
                whole.response
                == daemon.client.generate(talker, "Hi", options=GREEDY, stream=False).response
            )
            chat = await client.chat(talker, HI, options=GREEDY, logprobs=True, stream=False)
            assert chat.logprobs is not None and len(chat.logprobs) == 4
            pieces = [p async for p in await client.chat(talker, HI, options=GREEDY)]
            assert "".join(p.message.content for p in pieces) == chat.message.content

    run(work())


def test_the_other_endpoints(daemon: Daemon, talker: str, tiny_gguf: Path) -> None:
    async def work() -> None:
        async with AsyncClient(str(daemon.socket_path)) as client:
            assert await client.version() == daemon.client.version()
            pulled = [p.status async for p in await client.pull(str(tiny_gguf))]
            assert pulled[-1] == "success"
            await client.copy(talker, "talker-copy")
            assert "talker-copy:latest" in {m.name for m in (await client.list()).models}
            assert (await client.show("talker-copy")).details.family == "llama"
            await client.delete("talker-copy")
            assert "talker-copy:latest" not in {m.name for m in (await client.list()).models}
            embedded = await client.embed(talker, ["alpha", "beta"], dimensions=8)
            assert [len(e) for e in embedded.embeddings] == [8, 8]
            assert len((await client.embeddings(talker, "alpha")).embedding) > 8
            assert talker in {m.name.split(":")[0] for m in (await client.ps()).models}
            digest = await client.push_blob(tiny_gguf)
            assert await client.blob_exists(digest)
            assert not await client.blob_exists("sha256:" + "0" * 64)
            steps = await client.create("from-blob", files={"model.gguf": digest}, stream=False)
            assert steps.status == "success"

    run(work())


def test_errors_before_and_during_a_stream(daemon: Daemon, tmp_path: Path) -> None:
    not_gguf = tmp_path / "broken.gguf"
    not_gguf.write_bytes(b"GGUF" + b"\0" * 100)

    async def work() -> None:
        async with AsyncClient(str(daemon.socket_path)) as client:
            with pytest.raises(ResponseError) as unknown:
                await client.generate("nope", "Hi")
            assert unknown.value.status == 404
            statuses = []
            with pytest.raises(ResponseError) as broken:
                async for progress in await client.pull(str(not_gguf)):
                    statuses.append(progress.status)
            assert statuses  # the stream had begun (status 200): the error came as a line
            assert broken.value.status == 422 and "not a usable GGUF" in broken.value.message

    run(work())


@pytest.mark.parametrize("host", ["{short}/missing/corral.sock", "127.0.0.1:1"])
def test_no_daemon_raises_daemon_not_running(host: str, socket_dir: Path) -> None:
    async def work() -> None:
        async with AsyncClient(host.format(short=socket_dir)) as client:
            await client.list()

    with pytest.raises(DaemonNotRunning, match="corral is not running"):
        run(work())


def test_a_host_that_does_not_resolve_raises_daemon_unreachable() -> None:
    async def work() -> None:
        async with AsyncClient("corral.invalid:11434") as client:
            await client.list()

    with pytest.raises(DaemonUnreachable, match=r"corral.invalid:11434: .*check CORRAL_HOST"):
        run(work())


def test_closing_the_client_ends_its_open_streams(daemon: Daemon, talker: str) -> None:
    async def work() -> None:
        client = AsyncClient(str(daemon.socket_path))
        async with client:
            started = await client.generate(talker, "Hi", options=GREEDY)
            assert (await anext(started)).response is not None
            unstarted = await client.chat(talker, HI, options=GREEDY)
        assert [p async for p in started] == [] and [p async for p in unstarted] == []
        assert (await client.generate(talker, "Hi", options=GREEDY, stream=False)).done
        await client.close()

    run(work())


def test_the_same_methods_and_arguments_as_the_sync_client() -> None:
    shared = {n for n in vars(Client) if not n.startswith("_")} - {"ping", "is_running"}
    for name in sorted(shared):
        method = getattr(AsyncClient, name)
        expected = list(inspect.signature(getattr(Client, name)).parameters)
        assert list(inspect.signature(method).parameters) == expected, name
        for overload in typing.get_overloads(method):
            assert list(inspect.signature(overload).parameters) == expected, name
