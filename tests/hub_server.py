"""A local Hugging Face Hub on 127.0.0.1: real HTTP, the endpoints huggingface_hub calls.

Each repository is a folder on disk. The server speaks what huggingface_hub 2.4's
`model_info`/`repo_info`, `list_repo_tree`/`list_repo_files`, `get_hf_file_metadata`,
`hf_hub_download` and `snapshot_download` request (read from its source):

    GET  /api/models/{org}/{repo}[/revision/{rev}][?blobs=true]   model info: sha, siblings
    GET  /api/models/{org}/{repo}/tree/{rev}[/{path}][?recursive=true]
    HEAD /{org}/{repo}/resolve/{rev}/{path}   X-Repo-Commit, ETag, X-Linked-Etag/-Size (LFS)
    GET  /{org}/{repo}/resolve/{rev}/{path}   the bytes; `Range: bytes=a-[b]` -> 206 / 416

Errors carry the hub's `X-Error-Code` (RepoNotFound, RevisionNotFound, EntryNotFound,
GatedRepo), which huggingface_hub turns into its typed errors. Weight-like files are
"LFS" files: their ETag is their sha256, as on huggingface.co; others get the git blob
id. A repository can require a token (`Authorization: Bearer <token>`). A test can cut
the next response(s) of a file after N bytes (`cut`) or make the hub lie about a file's
sha256 (`lie_about`), and reads what was asked for (`requests`) and how many file bytes
were sent (`sent`). Only 127.0.0.1 is bound.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

LFS_SUFFIXES = (".safetensors", ".gguf", ".bin", ".model", ".pt", ".pth", ".npz")
LFS_MIN_SIZE = 10 << 20  # larger files are LFS whatever their name
_RESOLVE = re.compile(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)")
_API = re.compile(r"/api/models/([^/]+/[^/]+)(?:/(revision|tree)/([^/]+)(?:/(.+))?)?")
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


@dataclass(frozen=True)
class HubFile:
    path: str  # inside the repository, "/"-separated
    local: Path
    size: int
    sha256: str
    git_oid: str  # git blob id (sha1 of "blob <size>\0" + bytes)
    lfs: bool


@dataclass
class HubRepo:
    repo_id: str
    folder: Path
    commit: str = ""
    token: str | None = None  # required bearer token, if any
    files: dict[str, HubFile] = field(default_factory=dict)

    def scan(self) -> None:
        """Index the folder (call again after changing it); the commit follows the content."""
        files = {}
        for p in sorted(self.folder.rglob("*")):
            if p.is_file():
                files[p.relative_to(self.folder).as_posix()] = _describe(self.folder, p)
        self.files = files
        listing = "".join(f"{f.path}:{f.sha256}\n" for f in files.values())
        self.commit = hashlib.sha1(f"{self.repo_id}\n{listing}".encode()).hexdigest()


def _describe(root: Path, p: Path) -> HubFile:
    sha, git = hashlib.sha256(), hashlib.sha1()
    size = p.stat().st_size
    git.update(f"blob {size}\0".encode())
    with open(p, "rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
            git.update(chunk)
    lfs = p.name.endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE
    rel = p.relative_to(root).as_posix()
    return HubFile(rel, p, size, sha.hexdigest(), git.hexdigest(), lfs)


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # without the query
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased


class LocalHub:
    """The hub's state; `start()` serves it on 127.0.0.1 (use as a context manager)."""

    def __init__(self) -> None:
        self.repos: dict[str, HubRepo] = {}
        self.requests: list[Request] = []
        self.sent: Counter[str] = Counter()  # "org/repo/path" -> file bytes sent
        self.cuts: dict[str, list[int]] = {}  # "org/repo/path" -> bytes per next response
        self.lies: set[str] = set()  # "org/repo/path" whose sha256 is announced wrong
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        assert self._server is not None, "hub not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def add_repo(self, repo_id: str, folder: Path, token: str | None = None) -> HubRepo:
        repo = HubRepo(repo_id, Path(folder), token=token)
        repo.scan()
        self.repos[repo_id] = repo
        return repo

    def cut(self, repo_id: str, path: str, after: int, times: int = 1) -> None:
        """The next `times` GETs of the file send only `after` bytes, then hang up."""
        self.cuts[f"{repo_id}/{path}"] = [after] * times

    def lie_about(self, repo_id: str, path: str) -> None:
        """Announce a wrong sha256 for the file (ETag, X-Linked-Etag and tree listing)."""
        self.lies.add(f"{repo_id}/{path}")

    def file_requests(self, repo_id: str, path: str, method: str = "GET") -> list[Request]:
        tail = f"/{repo_id}/resolve/"
        return [
            r
            for r in self.requests
            if r.method == method and r.path.startswith(tail) and r.path.endswith(f"/{path}")
        ]

    def announced_sha(self, repo_id: str, f: HubFile) -> str:
        return "0" * 64 if f"{repo_id}/{f.path}" in self.lies else f.sha256

    def take_cut(self, key: str) -> int | None:
        with self._lock:
            pending = self.cuts.get(key)
            if not pending:
                return None
            return pending.pop(0)

    def record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def count_sent(self, key: str, n: int) -> None:
        with self._lock:
            self.sent[key] += n

    def handler(self) -> type[BaseHTTPRequestHandler]:
        """The request handler class serving this hub (another hub's API overrides it)."""
        return _handler(self)

    def start(self) -> LocalHub:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler())
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str = "") -> None:
        super().__init__(code)
        self.status, self.code, self.message = status, code, message


class HubHandler(BaseHTTPRequestHandler):
    """GET and HEAD, each request recorded in the hub, then `serve` answers it."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self.serve(self._recorded(), body=False)

    def do_GET(self) -> None:
        self.serve(self._recorded(), body=True)

    def recorder(self) -> LocalHub:
        raise NotImplementedError

    def serve(self, request: Request, body: bool) -> None:
        raise NotImplementedError

    def _recorded(self) -> Request:
        parts = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(parts.path)
        query = dict(urllib.parse.parse_qsl(parts.query))
        headers = {k.lower(): v for k, v in self.headers.items()}
        request = Request(self.command, path, query, headers)
        self.recorder().record(request)
        return request


def _handler(hub: LocalHub) -> type[BaseHTTPRequestHandler]:
    class Handler(HubHandler):
        def recorder(self) -> LocalHub:
            return hub

        def serve(self, request: Request, body: bool) -> None:
            path, query = request.path, request.query
            try:
                if m := _API.fullmatch(path):
                    self._api(m, query)
                elif m := _RESOLVE.fullmatch(path):
                    self._resolve(m[1], m[2], m[3], body)
                else:
                    raise _Refused(404, "RepoNotFound")
            except _Refused as e:
                self._json(e.status, {"error": e.message or e.code}, {"X-Error-Code": e.code})

        def _repo(self, repo_id: str, revision: str | None) -> HubRepo:
            repo = hub.repos.get(repo_id)
            if repo is None:
                raise _Refused(401, "RepoNotFound", "Repository not found")
            if repo.token is not None:
                sent = self.headers.get("Authorization", "")
                if sent != f"Bearer {repo.token}":
                    raise _Refused(401, "GatedRepo", "Access to this model is restricted")
            if revision not in (None, "main", repo.commit):
                raise _Refused(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return repo

        def _api(self, m: re.Match[str], query: dict[str, str]) -> None:
            repo = self._repo(m[1], m[3])
            if m[2] == "tree":
                return self._json(200, _tree(hub, repo, m[4] or "", query))
            blobs = query.get("blobs", "").lower() == "true"
            siblings = [_sibling(hub, repo, f, blobs) for f in repo.files.values()]
            info = {
                "_id": repo.commit[:24],
                "id": repo.repo_id,
                "modelId": repo.repo_id,
                "sha": repo.commit,
                "private": repo.token is not None,
                "gated": False,
                "disabled": False,
                "tags": [],
                "siblings": siblings,
                "lastModified": "2025-01-01T00:00:00.000Z",
                "createdAt": "2025-01-01T00:00:00.000Z",
            }
            self._json(200, info)

        def _resolve(self, repo_id: str, revision: str, path: str, body: bool) -> None:
            repo = self._repo(repo_id, urllib.parse.unquote(revision))
            f = repo.files.get(path)
            if f is None:
                raise _Refused(404, "EntryNotFound", f"{path} does not exist")
            sha = hub.announced_sha(repo_id, f)
            headers = {"X-Repo-Commit": repo.commit, "Accept-Ranges": "bytes"}
            headers["ETag"] = f'"{sha if f.lfs else f.git_oid}"'
            if f.lfs:
                headers |= {"X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(f.size)}
            start, end = self._range(f.size, headers)
            headers["Content-Type"] = "application/octet-stream"
            headers["Content-Length"] = str(end - start)
            self.send_response(206 if "Content-Range" in headers else 200)
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            if body:
                self._send_file(f"{repo_id}/{path}", f.local, start, end)

        def _range(self, size: int, headers: dict[str, str]) -> tuple[int, int]:
            found = byte_range(self.headers.get("Range"), size, headers)
            if found is None:
                raise _Refused(416, "RangeNotSatisfiable")
            return found

        def _send_file(self, key: str, local: Path, start: int, end: int) -> None:
            send_bytes(self, hub, key, local, start, end)

        def _json(self, status: int, data: object, extra: dict[str, str] | None = None) -> None:
            body = json.dumps(data).encode()
            self.send_response(status)
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

    return Handler


def byte_range(wanted: str | None, size: int, headers: dict[str, str]) -> tuple[int, int] | None:
    """[start, end) of a `Range: bytes=a-[b]` request (the whole file without one), adding
    Content-Range to `headers`; None when the range cannot be satisfied (HTTP 416)."""
    if wanted is None:
        return 0, size
    m = _RANGE.fullmatch(wanted.strip())
    if m is None or int(m[1]) >= size:
        headers["Content-Range"] = f"bytes */{size}"
        return None
    start, end = int(m[1]), min(int(m[2]) + 1 if m[2] else size, size)
    headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    return start, end


def send_bytes(
    handler: BaseHTTPRequestHandler, hub: LocalHub, key: str, local: Path, start: int, end: int
) -> None:
    """Write bytes [start, end) of `local`, unless the hub was told to cut this file's next
    response short: then only that many bytes, and the connection is dropped."""
    cut = hub.take_cut(key)
    stop = end if cut is None else min(end, start + cut)
    with open(local, "rb") as src:
        src.seek(start)
        pos = start
        while pos < stop:
            chunk = src.read(min(1 << 16, stop - pos))
            hub.count_sent(key, len(chunk))  # before the client can see the bytes
            handler.wfile.write(chunk)
            pos += len(chunk)
    if cut is not None:
        handler.wfile.flush()
        handler.close_connection = True


def _lfs(hub: LocalHub, repo: HubRepo, f: HubFile, key: str) -> dict[str, object]:
    return {key: hub.announced_sha(repo.repo_id, f), "size": f.size, "pointerSize": 134}


def _sibling(hub: LocalHub, repo: HubRepo, f: HubFile, blobs: bool) -> dict[str, object]:
    out: dict[str, object] = {"rfilename": f.path}
    if blobs:
        out |= {"size": f.size, "blobId": f.git_oid}
        if f.lfs:
            out["lfs"] = _lfs(hub, repo, f, "sha256")
    return out


def _tree(hub: LocalHub, repo: HubRepo, under: str, query: dict[str, str]) -> list[dict]:
    recursive = query.get("recursive", "").lower() == "true"
    prefix = f"{under.strip('/')}/" if under else ""
    if under and not any(p.startswith(prefix) for p in repo.files):
        raise _Refused(404, "EntryNotFound", f"{under} does not exist")
    entries: dict[str, dict] = {}
    for path, f in repo.files.items():
        if not path.startswith(prefix):
            continue
        rest = path[len(prefix) :].split("/")
        for depth in range(1, len(rest)):  # the folders on the way
            folder = prefix + "/".join(rest[:depth])
            if recursive or depth == 1:
                oid = hashlib.sha1(folder.encode()).hexdigest()
                entries.setdefault(folder, {"type": "directory", "oid": oid, "path": folder})
        if recursive or len(rest) == 1:
            entry = {"type": "file", "oid": f.git_oid, "size": f.size, "path": path}
            if f.lfs:
                entry["lfs"] = _lfs(hub, repo, f, "oid")
            entries[path] = entry
    return list(entries.values())
