"""The local hub (tests/hub_server.py) answers huggingface_hub's real client calls."""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from pathlib import Path

import huggingface_hub as hf
import pytest
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile, RepoFolder

from hub_server import LocalHub

REPO = "test-org/some-model"
WEIGHTS = bytes(range(256)) * 40  # an "LFS" file
CONFIG = b'{"architectures": ["LlamaForCausalLM"]}\n'


@pytest.fixture
def repo_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "repo"
    (folder / "sub").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(WEIGHTS)
    (folder / "config.json").write_bytes(CONFIG)
    (folder / "sub" / "notes.txt").write_text("hello")
    return folder


def git_oid(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


def test_model_info_tree_and_file_metadata(local_hub: LocalHub, repo_dir: Path) -> None:
    repo = local_hub.add_repo(REPO, repo_dir)
    api = hf.HfApi(endpoint=local_hub.url)
    info = api.model_info(REPO)
    assert info.sha == repo.commit and len(repo.commit) == 40
    assert sorted(s.rfilename for s in info.siblings) == [
        "config.json",
        "model.safetensors",
        "sub/notes.txt",
    ]
    detailed = api.model_info(REPO, revision=repo.commit, files_metadata=True)
    lfs = {s.rfilename: s.lfs for s in detailed.siblings}
    assert lfs["model.safetensors"].sha256 == hashlib.sha256(WEIGHTS).hexdigest()
    assert lfs["config.json"] is None
    tree = list(api.list_repo_tree(REPO, recursive=True))
    files = {e.path: e for e in tree if isinstance(e, RepoFile)}
    assert [e.path for e in tree if isinstance(e, RepoFolder)] == ["sub"]
    assert files["model.safetensors"].lfs.sha256 == hashlib.sha256(WEIGHTS).hexdigest()
    assert files["config.json"].blob_id == git_oid(CONFIG)
    assert [e.path for e in api.list_repo_tree(REPO, path_in_repo="sub")] == ["sub/notes.txt"]
    assert sorted(api.list_repo_files(REPO)) == sorted(files)
    url = hf.hf_hub_url(REPO, "model.safetensors", endpoint=local_hub.url)
    meta = hf.get_hf_file_metadata(url)
    assert (meta.commit_hash, meta.etag, meta.size) == (
        repo.commit,
        hashlib.sha256(WEIGHTS).hexdigest(),
        len(WEIGHTS),
    )
    config_url = hf.hf_hub_url(REPO, "config.json", endpoint=local_hub.url)
    assert hf.get_hf_file_metadata(config_url).etag == git_oid(CONFIG)


def test_hf_hub_download_and_snapshot_download(
    local_hub: LocalHub, repo_dir: Path, tmp_path: Path
) -> None:
    local_hub.add_repo(REPO, repo_dir)
    path = hf.hf_hub_download(REPO, "model.safetensors", endpoint=local_hub.url)
    assert Path(path).read_bytes() == WEIGHTS
    folder = Path(hf.snapshot_download(REPO, endpoint=local_hub.url, cache_dir=tmp_path / "c"))
    assert (folder / "sub" / "notes.txt").read_text() == "hello"
    assert (folder / "config.json").read_bytes() == CONFIG
    cached = hf.try_to_load_from_cache(REPO, "model.safetensors")
    assert cached is not None and Path(cached).read_bytes() == WEIGHTS


def test_hub_errors_are_the_typed_ones(local_hub: LocalHub, repo_dir: Path) -> None:
    local_hub.add_repo(REPO, repo_dir)
    api = hf.HfApi(endpoint=local_hub.url)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("nobody/nothing")
    with pytest.raises(RevisionNotFoundError):
        api.model_info(REPO, revision="v9")
    with pytest.raises(EntryNotFoundError):
        hf.get_hf_file_metadata(hf.hf_hub_url(REPO, "missing.bin", endpoint=local_hub.url))


def test_private_repo_needs_the_token(
    local_hub: LocalHub, repo_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local_hub.add_repo(REPO, repo_dir, token="hf_secret")
    api = hf.HfApi(endpoint=local_hub.url)
    with pytest.raises(GatedRepoError):
        api.model_info(REPO)
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    assert api.model_info(REPO).id == REPO
    assert local_hub.requests[-1].headers["authorization"] == "Bearer hf_secret"


def _get(url: str, headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, b"", dict(e.headers)


def test_ranges_and_cut_responses(local_hub: LocalHub, repo_dir: Path) -> None:
    local_hub.add_repo(REPO, repo_dir)
    url = f"{local_hub.url}/{REPO}/resolve/main/model.safetensors"
    status, body, headers = _get(url, {"Range": "bytes=1000-"})
    assert (status, body) == (206, WEIGHTS[1000:])
    assert headers["Content-Range"] == f"bytes 1000-{len(WEIGHTS) - 1}/{len(WEIGHTS)}"
    assert _get(url, {"Range": "bytes=10-19"})[:2] == (206, WEIGHTS[10:20])
    assert _get(url, {"Range": f"bytes={len(WEIGHTS)}-"})[0] == 416
    local_hub.cut(REPO, "model.safetensors", after=3000)
    request = urllib.request.Request(url)
    with urllib.request.urlopen(request, timeout=10) as r:
        assert r.headers["Content-Length"] == str(len(WEIGHTS))
        assert len(r.read(len(WEIGHTS))) == 3000  # the server hung up
    assert _get(url, {})[1] == WEIGHTS  # the cut applied once
    assert local_hub.sent[f"{REPO}/model.safetensors"] == (
        len(WEIGHTS) - 1000 + 10 + 3000 + len(WEIGHTS)
    )
