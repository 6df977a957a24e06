"""Fixtures for registry tests: tiny real GGUF files, real wheels, and real HTTP
servers on 127.0.0.1 (a PEP 691/503 package index, a Hugging Face-style hub,
a port that refuses connections and one that accepts but never answers)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import threading
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import gguf
import huggingface_hub.constants
import numpy as np
import pytest

from corral.registry.store import Store
from hf_checkpoint import derive_checkpoint
from hub_server import LocalHub
from tiny_archs import write_tiny_arch

_MACHINE_ENV = dict(os.environ)  # before any test changes it
PIP_VARS = ("PIP_CONFIG_FILE", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX")


@pytest.fixture
def machine_pip_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """Undo the isolation: use this machine's own pip configuration and index."""
    for var in PIP_VARS:
        if var in _MACHINE_ENV:
            monkeypatch.setenv(var, _MACHINE_ENV[var])
        else:
            monkeypatch.delenv(var, raising=False)


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, refused_port: int) -> None:
    """No test here reads the machine's pip config or reaches a real hub by accident."""
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    for var in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{refused_port}/simple")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{refused_port}")
    monkeypatch.delenv("MODELSCOPE_DOMAIN", raising=False)
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", f"http://127.0.0.1:{refused_port}")


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "home")


def write_tiny_gguf(path: Path, *, file_type: int | None = 7, seed: int = 0) -> Path:
    """A small but complete llama-architecture GGUF: one F32 and one Q8_0 tensor."""
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(256)
    w.add_name(f"tiny-{seed}")
    w.add_string("general.license", "mit")
    if file_type is not None:
        w.add_file_type(file_type)
    w.add_chat_template("{% for m in messages %}{{ m.content }}{% endfor %}")
    w.add_tensor("token_embd.weight", rng.standard_normal((16, 32)).astype(np.float32))
    q8 = gguf.quants.quantize(
        rng.standard_normal((64, 32)).astype(np.float32), gguf.GGMLQuantizationType.Q8_0
    )
    w.add_tensor("blk.0.attn_q.weight", q8, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def tiny_gguf(tmp_path: Path) -> Path:
    return write_tiny_gguf(tmp_path / "tiny.gguf")


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_wheel(folder: Path, name: str, version: str, members: dict[str, bytes]) -> Path:
    """A real wheel (zip with dist-info) holding `members`."""
    dist = f"{name.replace('-', '_')}-{version}"
    path = folder / f"{dist}-py3-none-any.whl"
    files = dict(members)
    files[f"{dist}.dist-info/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    )
    files[f"{dist}.dist-info/WHEEL"] = (
        b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = "".join(f"{n},,\n" for n in files) + f"{dist}.dist-info/RECORD,,\n"
    files[f"{dist}.dist-info/RECORD"] = record.encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for member, data in files.items():
            zf.writestr(member, data)
    return path


@dataclass
class IndexServer:
    """A package index on 127.0.0.1: /simple/<project>/ and /files/<wheel>."""

    url: str  # the index URL, ".../simple"
    projects: dict[str, list[Path]] = field(default_factory=dict)
    mode: str = "json"  # "json" (PEP 691) or "html" (PEP 503)
    wrong_hash: bool = False
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    def add(self, project: str, wheel: Path) -> None:
        self.projects.setdefault(project, []).append(wheel)

    def wheel(self, filename: str) -> Path | None:
        for wheels in self.projects.values():
            for w in wheels:
                if w.name == filename:
                    return w
        return None

    def listed_hash(self, wheel: Path) -> str:
        return "0" * 64 if self.wrong_hash else sha256_file(wheel)


def _index_handler(index: IndexServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            index.requests.append(("GET", self.path, dict(self.headers)))
            m = re.fullmatch(r"/simple/([^/]+)/", self.path)
            if m:
                return self._project(m[1])
            m = re.fullmatch(r"/files/([^/]+)", self.path)
            wheel = index.wheel(m[1]) if m else None
            if wheel is None:
                return self._send(404, b"not found", "text/plain")
            self._file(wheel.read_bytes())

        def _project(self, project: str) -> None:
            wheels = index.projects.get(project)
            if wheels is None:
                return self._send(404, b"not found", "text/plain")
            wants_json = "application/vnd.pypi.simple.v1+json" in self.headers.get("Accept", "")
            if index.mode == "json" and wants_json:
                files = [
                    {
                        "filename": w.name,
                        "url": f"../../files/{w.name}",
                        "hashes": {"sha256": index.listed_hash(w)},
                        "size": w.stat().st_size,
                    }
                    for w in wheels
                ]
                body = json.dumps({"meta": {"api-version": "1.0"}, "name": project, "files": files})
                return self._send(200, body.encode(), "application/vnd.pypi.simple.v1+json")
            links = "".join(
                f'<a href="/files/{w.name}#sha256={index.listed_hash(w)}">{w.name}</a><br/>'
                for w in wheels
            )
            self._send(200, f"<html><body>{links}</body></html>".encode(), "text/html")

        def _file(self, data: bytes) -> None:
            m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
            if m and int(m[1]) >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                return self._body(b"", "text/plain")
            if m:
                start = int(m[1])
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                return self._body(data[start:], "application/octet-stream")
            self._send(200, data, "application/octet-stream")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self._body(body, content_type)

        def _body(self, body: bytes, content_type: str) -> None:
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


@contextlib.contextmanager
def serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[ThreadingHTTPServer]:
    """A real HTTP server on 127.0.0.1 (free port) in a thread."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def index_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[IndexServer]:
    """A real local package index, configured as pip's index through PIP_INDEX_URL."""
    index = IndexServer(url="")
    with serve(_index_handler(index)) as server:
        index.url = f"http://127.0.0.1:{server.server_address[1]}/simple"
        monkeypatch.setenv("PIP_INDEX_URL", index.url)
        yield index


@pytest.fixture
def http_server() -> Iterator[Callable[[type[BaseHTTPRequestHandler]], str]]:
    """Start servers for request handler classes; returns their base URL."""
    with contextlib.ExitStack() as stack:

        def start(handler: type[BaseHTTPRequestHandler]) -> str:
            server = stack.enter_context(serve(handler))
            return f"http://127.0.0.1:{server.server_address[1]}"

        yield start


@pytest.fixture(scope="session")
def refused_port() -> Iterator[int]:
    """A port bound on 127.0.0.1 but not listening: connections are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


@dataclass
class SilentServer:
    """Accepts connections, counts them, and never sends a byte."""

    port: int
    connections: list[socket.socket] = field(default_factory=list)


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    stop = threading.Event()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listener.settimeout(0.05)
        server = SilentServer(listener.getsockname()[1])

        def accept() -> None:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    server.connections.append(listener.accept()[0])

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        try:
            yield server
        finally:
            stop.set()
            thread.join()
            for conn in server.connections:
                conn.close()


def _store_files(store: Store) -> list[str]:
    """Every file under the store's home, relative, sorted."""
    return sorted(str(p.relative_to(store.home)) for p in store.home.rglob("*") if p.is_file())


@pytest.fixture
def make_gguf() -> Callable[..., Path]:
    return write_tiny_gguf


def write_gguf_repo(folder: Path, quants: Sequence[str]) -> Path:
    """A hub repo's files: a tiny GGUF per quant (Tiny-<QUANT>.gguf), a projector and a
    README."""
    folder.mkdir()
    for seed, quant in enumerate(quants):
        write_tiny_gguf(folder / f"Tiny-{quant}.gguf", seed=seed)
    write_tiny_gguf(folder / "mmproj-Tiny-F16.gguf", seed=9)
    (folder / "README.md").write_text("# Tiny\n")
    return folder


@pytest.fixture
def make_gguf_repo() -> Callable[[Path, Sequence[str]], Path]:
    return write_gguf_repo


@pytest.fixture
def make_wheel() -> Callable[..., Path]:
    return build_wheel


@pytest.fixture
def store_files() -> Callable[[Store], list[str]]:
    return _store_files


@pytest.fixture
def local_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[LocalHub]:
    """A Hugging Face hub on 127.0.0.1 (tests/hub_server.py) that HF_ENDPOINT points at,
    with an empty HF cache and no token from this machine."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with LocalHub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        yield hub


@pytest.fixture
def make_checkpoint(tmp_path: Path) -> Callable[..., Path]:
    """make_checkpoint(arch="llama", dtype="BF16", shards=1) -> a folder holding the HF
    checkpoint derived from a tiny random-weight GGUF of `arch` (tests/hf_checkpoint.py)."""
    count = 0

    def make(arch: str = "llama", dtype: str = "BF16", shards: int = 1) -> Path:
        nonlocal count
        count += 1
        gguf_path = write_tiny_arch(tmp_path / f"tiny-{arch}-{count}.gguf", arch)
        return derive_checkpoint(
            gguf_path, tmp_path / f"ckpt-{arch}-{count}", dtype=dtype, shards=shards
        )

    return make
