"""A local ModelScope hub on 127.0.0.1: real HTTP, the endpoints the modelscope client calls.

Each repository is a folder on disk (indexed as tests/hub_server.py does for the Hugging
Face hub, whose state, cuts, lies and byte serving this reuses). The server speaks what
modelscope 1.40 / modelscope-hub 0.5 (`HubApi.get_valid_revision_detail`,
`list_repo_files`, `get_model_files`, `model_file_download`, `snapshot_download`) request,
as read from their source (modelscope_hub/_legacy_api.py, _download.py):

    GET  /api/v1/models/{org}/{repo}/revisions              RevisionMap: Branches, Tags
    GET  /api/v1/models/{org}/{repo}/repo/files?Revision=r&Recursive=True[&Root=dir]
         Files: Name, Path, Type (blob|tree), Size, Sha256, IsLFS, Revision, ...
    HEAD|GET /api/v1/models/{org}/{repo}/repo?Revision=r&FilePath=p
         the bytes (`Range: bytes=a-[b]` -> 206 / 416); LFS files answer 302 to
    HEAD|GET /oss/{org}/{repo}/{commit}/{path}   a "storage" URL that needs no credentials

Every answer is ModelScope's JSON envelope {"Code", "Data", "Message", "RequestId",
"Success"}; an unknown repository is HTTP 404, a private one without its token
(`Authorization: Bearer <t>` or the `m_session_id=<t>` cookie) HTTP 401, an unknown
revision or file HTTP 404. Every other path (e.g. the client's region probe) is 404.
"""

from __future__ import annotations

import json
import re
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from hub_server import (
    HubFile,
    HubHandler,
    HubRepo,
    LocalHub,
    Request,
    byte_range,
    send_bytes,
)

_API = re.compile(r"/api/v1/models/([^/]+/[^/]+)/(revisions|repo/files|repo)")
_OSS = re.compile(r"/oss/([^/]+/[^/]+)/([0-9a-f]{40})/(.+)")
CREATED_AT = 1735689600  # 2025-01-01, for every branch, tag and commit


class ModelScopeHub(LocalHub):
    """The hub's state; `start()` serves it on 127.0.0.1 (use as a context manager)."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: dict[str, list[str]] = {}  # repo -> tags (all at the current content)

    def add_repo(
        self, repo_id: str, folder: Path, token: str | None = None, tags: tuple[str, ...] = ()
    ) -> HubRepo:
        self.tags[repo_id] = list(tags)
        return super().add_repo(repo_id, folder, token)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        return _handler(self)

    def file_requests(self, repo_id: str, path: str, method: str = "GET") -> list[Request]:
        """The requests that asked for the file's bytes: the API's download endpoint (which
        redirects LFS files) and the storage URL."""
        return [
            r
            for r in self.requests
            if r.method == method
            and (
                (r.path == f"/api/v1/models/{repo_id}/repo" and r.query.get("FilePath") == path)
                or (r.path.startswith(f"/oss/{repo_id}/") and r.path.endswith(f"/{path}"))
            )
        ]

    def data_requests(self, repo_id: str, path: str) -> list[Request]:
        """The GETs that were answered with the file's bytes (not with a redirect)."""
        repo = self.repos[repo_id]
        f = repo.files[path]
        if not f.lfs:
            return self.file_requests(repo_id, path)
        return [r for r in self.file_requests(repo_id, path) if r.path.startswith("/oss/")]


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _envelope(data: object, status: int = 200, message: str = "success") -> dict[str, object]:
    return {
        "Code": status,
        "Data": data,
        "Message": message,
        "RequestId": uuid.uuid4().hex,
        "Success": status == 200,
    }


def _handler(hub: ModelScopeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(HubHandler):
        def recorder(self) -> LocalHub:
            return hub

        def serve(self, request: Request, body: bool) -> None:
            path, query = request.path, request.query
            try:
                if m := _API.fullmatch(path):
                    self._api(m[1], m[2], query, body)
                elif m := _OSS.fullmatch(path):
                    self._oss(m[1], m[2], m[3], body)
                else:
                    raise _Refused(404, f"no such API: {path}")
            except _Refused as e:
                self._json(e.status, _envelope(None, e.status, e.message))

        def _repo(self, repo_id: str) -> HubRepo:
            repo = hub.repos.get(repo_id)
            if repo is None:
                raise _Refused(404, f"model {repo_id} does not exist")
            if repo.token is not None and repo.token not in self._credentials():
                raise _Refused(401, "login required: this model is private")
            return repo

        def _credentials(self) -> set[str]:
            sent = set()
            auth = self.headers.get("Authorization", "")
            if auth.startswith("Bearer "):
                sent.add(auth.removeprefix("Bearer "))
            for part in self.headers.get("Cookie", "").split(";"):
                name, _, value = part.strip().partition("=")
                if name == "m_session_id":
                    sent.add(value)
            return sent

        def _revision(self, repo_id: str, revision: str | None) -> None:
            if revision not in (None, "master", *hub.tags.get(repo_id, [])):
                raise _Refused(404, f"revision {revision} does not exist")

        def _api(self, repo_id: str, kind: str, query: dict[str, str], body: bool) -> None:
            repo = self._repo(repo_id)
            if kind == "revisions":
                return self._json(200, _envelope({"RevisionMap": _revisions(hub, repo_id)}))
            self._revision(repo_id, query.get("Revision"))
            if kind == "repo/files":
                recursive = query.get("Recursive", "").lower() == "true"
                files = _listing(hub, repo, query.get("Root", ""), recursive)
                return self._json(200, _envelope({"Files": files}))
            f = repo.files.get(query.get("FilePath", ""))
            if f is None:
                raise _Refused(404, f"file {query.get('FilePath')} does not exist")
            if f.lfs:  # big files live in object storage, behind a redirect
                quoted = urllib.parse.quote(f.path)
                return self._redirect(f"/oss/{repo_id}/{repo.commit}/{quoted}")
            self._file(repo_id, f, body)

        def _oss(self, repo_id: str, commit: str, path: str, body: bool) -> None:
            repo = hub.repos.get(repo_id)
            f = repo.files.get(path) if repo is not None and repo.commit == commit else None
            if f is None:
                raise _Refused(404, "NoSuchKey")
            self._file(repo_id, f, body)

        def _file(self, repo_id: str, f: HubFile, body: bool) -> None:
            headers = {"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
            found = byte_range(self.headers.get("Range"), f.size, headers)
            if found is None:
                raise _Refused(416, "requested range not satisfiable")
            start, end = found
            headers["Content-Length"] = str(end - start)
            self.send_response(206 if "Content-Range" in headers else 200)
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            if body:
                send_bytes(self, hub, f"{repo_id}/{f.path}", f.local, start, end)

        def _redirect(self, location: str) -> None:
            host = self.headers.get("Host", "127.0.0.1")
            self.send_response(302)
            self.send_header("Location", f"http://{host}{location}")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _json(self, status: int, data: object) -> None:
            encoded = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(encoded)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(encoded)

    return Handler


def _revisions(hub: ModelScopeHub, repo_id: str) -> dict[str, list[dict[str, object]]]:
    def ref(name: str) -> dict[str, object]:
        return {"Revision": name, "CreatedAt": CREATED_AT}

    return {"Branches": [ref("master")], "Tags": [ref(t) for t in hub.tags.get(repo_id, [])]}


def _entry(hub: ModelScopeHub, repo: HubRepo, path: str, f: HubFile | None) -> dict[str, object]:
    entry: dict[str, object] = {
        "CommitMessage": "upload",
        "CommittedDate": CREATED_AT,
        "CommitterName": "corral-tests",
        "InCheck": False,
        "IsLFS": bool(f and f.lfs),
        "Mode": "33188" if f else "16384",
        "Name": path.rsplit("/", 1)[-1],
        "Path": path,
        "Revision": repo.commit,
        "Sha256": hub.announced_sha(repo.repo_id, f) if f else "",
        "Size": f.size if f else 0,
        "Type": "blob" if f else "tree",
    }
    return entry


def _listing(hub: ModelScopeHub, repo: HubRepo, root: str, recursive: bool) -> list[dict]:
    prefix = f"{root.strip('/')}/" if root.strip("/") else ""
    entries: dict[str, dict] = {}
    for path, f in repo.files.items():
        if not path.startswith(prefix):
            continue
        rest = path[len(prefix) :].split("/")
        for depth in range(1, len(rest)):  # the folders on the way
            if recursive or depth == 1:
                folder = prefix + "/".join(rest[:depth])
                entries.setdefault(folder, _entry(hub, repo, folder, None))
        if recursive or len(rest) == 1:
            entries[path] = _entry(hub, repo, path, f)
    return list(entries.values())
