"""hf:// pulls with the real huggingface_hub: against a hub served on 127.0.0.1,
and failing over in seconds when the hub refuses connections or never answers."""

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import huggingface_hub.constants
import pytest

from corral.registry.errors import CorruptModel, SourceError
from corral.registry.progress import PullProgress
from corral.registry.pull import pull, pull_target
from corral.registry.sources.hf import HfSource
from corral.registry.store import Store

COMMIT = "c0ffee" + "0" * 34
HF_SPEC = "hf://test-org/tiny-GGUF/tiny.Q8_0.gguf"


@dataclass
class Hub:
    files: dict[str, bytes] = field(default_factory=dict)  # "org/repo/file" -> data
    wrong_etag: bool = False
    requests: list[tuple[str, str]] = field(default_factory=list)


def _hub_handler(hub: Hub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _serve(self, body: bool) -> None:
            hub.requests.append((self.command, self.path))
            m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", self.path)
            repos = {k.rsplit("/", 1)[0] for k in hub.files}
            if m is None or m[1] not in repos:
                return self._error("RepoNotFound")
            data = hub.files.get(f"{m[1]}/{m[3]}")
            if data is None:
                return self._error("EntryNotFound")
            etag = "0" * 64 if hub.wrong_etag else hashlib.sha256(data).hexdigest()
            self.send_response(200)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", f'"{etag}"')
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)

        def _error(self, code: str) -> None:
            self.send_response(404)
            self.send_header("X-Error-Code", code)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler


@pytest.fixture
def hub(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_gguf: Path, http_server: Callable
) -> Hub:
    """A hub on 127.0.0.1 speaking the resolve endpoint; HF cache in tmp_path."""
    state = Hub({"test-org/tiny-GGUF/tiny.Q8_0.gguf": tiny_gguf.read_bytes()})
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_ENDPOINT", http_server(_hub_handler(state)))
    return state


def test_pull_from_hub(store: Store, hub: Hub, tiny_gguf: Path) -> None:
    events: list[PullProgress] = []
    model = pull(store, HF_SPEC, events.append)
    assert model.name == "hf.co/test-org/tiny-gguf:tiny.q8_0"
    assert model.model_path.read_bytes() == tiny_gguf.read_bytes()
    src = model.manifest.source
    assert (src["kind"], src["repo"], src["revision"], src["file"]) == (
        "huggingface",
        "test-org/tiny-GGUF",
        COMMIT,
        "tiny.Q8_0.gguf",
    )
    sha = hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()
    assert f"pulling {sha[:12]}" in [e.status for e in events]
    assert ("GET", "/test-org/tiny-GGUF/resolve/main/tiny.Q8_0.gguf") in hub.requests


def test_hub_file_with_wrong_etag_is_refused(store: Store, hub: Hub, store_files: Callable) -> None:
    hub.wrong_etag = True
    with pytest.raises(CorruptModel, match="sha256 mismatch"):
        pull(store, HF_SPEC)
    assert store_files(store) == []


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("hf://nobody/nothing/x.gguf", "repository nobody/nothing not found on 127.0.0.1:"),
        ("hf://test-org/tiny-GGUF/missing.gguf", "missing.gguf not found in test-org/tiny-GGUF"),
    ],
)
def test_hub_errors(store: Store, hub: Hub, spec: str, message: str) -> None:
    with pytest.raises(SourceError, match=re.escape(message)):
        pull(store, spec)


def _failover_recipe(home: Path, local: Path) -> None:
    folder = home / "Modelfiles"
    folder.mkdir(parents=True)
    (folder / "fallback-test.yaml").write_text(
        f"name: fallback:test\nsources:\n  - {HF_SPEC}\n  - {local}\n"
        "parameters: {stop: ['<|im_end|>']}\nlicense: mit\n"
    )


def _assert_fell_over(store: Store, events: list[PullProgress], local: Path, why: str) -> None:
    model = store.resolve("fallback:test")
    assert model.manifest.source["kind"] == "local"
    assert model.manifest.parameters == {"stop": ["<|im_end|>"]}
    lines = [e.status for e in events if "trying" in e.status]
    assert len(lines) == 1
    assert re.fullmatch(rf"127\.0\.0\.1:\d+ unreachable \({why}\), trying {local}", lines[0])


def test_refused_hub_fails_over(
    store: Store, tiny_gguf: Path, refused_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{refused_port}")
    _failover_recipe(store.home, tiny_gguf)
    events: list[PullProgress] = []
    pull(store, "fallback:test", events.append)
    _assert_fell_over(store, events, tiny_gguf, "connection refused")


def test_silent_hub_fails_over_without_retrying(
    store: Store, tiny_gguf: Path, silent_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{silent_server.port}")
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "1")
    _failover_recipe(store.home, tiny_gguf)
    events: list[PullProgress] = []
    pull(store, "fallback:test", events.append)
    _assert_fell_over(store, events, tiny_gguf, "timed out")
    # One request and no retry loop (huggingface_hub alone would try 6 times over ~20 s).
    assert len(silent_server.connections) == 1


def test_all_sources_failing_is_one_line(
    store: Store, tmp_path: Path, refused_port: int, store_files: Callable
) -> None:
    _failover_recipe(store.home, tmp_path / "gone.gguf")
    with pytest.raises(SourceError) as info:
        pull(store, "fallback:test")
    message = str(info.value)
    assert message.startswith("could not pull fallback:test from any source: hf://")
    assert "unreachable (connection refused)" in message and "gone.gguf not found" in message
    assert "\n" not in message
    assert [f for f in store_files(store) if not f.startswith("Modelfiles/")] == []


@pytest.mark.parametrize(
    "spec",
    [
        "hf://org",
        "hf://org/repo/weights.safetensors",
        "hf://o/r/../x.gguf",
        "hf.co/org",
        "hf://o/r:",
    ],
)
def test_bad_specs(spec: str) -> None:
    with pytest.raises(SourceError):
        HfSource.parse(spec)


def test_revision_and_target_name() -> None:
    source = HfSource.parse("hf://Org/Repo-GGUF@abc123/sub/Model.Q4_1.gguf")
    assert (source.repo_id, source.revision, source.filename) == (
        "Org/Repo-GGUF",
        "abc123",
        "sub/Model.Q4_1.gguf",
    )
    assert str(pull_target(source.spec)) == "hf.co/org/repo-gguf:model.q4_1"
