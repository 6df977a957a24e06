"""Repositories of GGUF files (Ollama's `hf.co/org/repo:QUANT`) and GGUF URLs, pulled from
a local hub with the real huggingface_hub client."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from corral.registry.create import create
from corral.registry.errors import CorruptModel, SourceError, SourceUnreachable
from corral.registry.modelfile import Modelfile
from corral.registry.pull import pull, pull_target
from corral.registry.sources import is_direct_source
from corral.registry.sources.hf_pick import pick_gguf, quant_of
from corral.registry.store import Store
from hub_server import LocalHub

REPO = "test-org/Tiny-GGUF"
QUANTS = ("Q4_K_M", "Q8_0", "Q5_K_S", "F16")


@pytest.fixture
def gguf_repo(
    tmp_path: Path, make_gguf_repo: Callable[[Path, Sequence[str]], Path], local_hub: LocalHub
) -> Path:
    folder = make_gguf_repo(tmp_path / "gguf-repo", QUANTS)
    local_hub.add_repo(REPO, folder)
    return folder


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("spec", "file", "name"),
    [
        (f"hf.co/{REPO}", "Tiny-Q4_K_M.gguf", "hf.co/test-org/tiny-gguf:latest"),
        (f"hf.co/{REPO}:q8_0", "Tiny-Q8_0.gguf", "hf.co/test-org/tiny-gguf:q8_0"),
        (f"huggingface.co/{REPO}:Q5_K_S", "Tiny-Q5_K_S.gguf", "hf.co/test-org/tiny-gguf:q5_k_s"),
        (f"hf://{REPO}:f16", "Tiny-F16.gguf", "hf.co/test-org/tiny-gguf:f16"),
        (
            f"hf://{REPO}:tiny-q8_0.gguf",
            "Tiny-Q8_0.gguf",
            "hf.co/test-org/tiny-gguf:tiny-q8_0.gguf",
        ),
    ],
)
def test_quant_selection(
    store: Store, gguf_repo: Path, local_hub: LocalHub, spec: str, file: str, name: str
) -> None:
    assert is_direct_source(spec)
    assert str(pull_target(spec)) == name
    model = pull(store, spec)
    assert model.name == name
    assert model.model_path.read_bytes() == (gguf_repo / file).read_bytes()
    src = model.manifest.source
    assert (src["file"], src["sha256"], src["revision"]) == (
        file,
        sha256(gguf_repo / file),
        local_hub.repos[REPO].commit,
    )
    assert [f.name for f in store.blobs.root.iterdir()] == [model.digest.replace(":", "-")]


def test_missing_quant_lists_what_exists(store: Store, gguf_repo: Path) -> None:
    with pytest.raises(SourceError) as info:
        pull(store, f"hf.co/{REPO}:Q3_K_M")
    assert str(info.value) == (
        f"{REPO} has no Q3_K_M GGUF file; it has: F16, Q4_K_M, Q5_K_S, Q8_0 (pull one with :Q4_K_M)"
    )
    assert list(store.manifests.rglob("*.yaml")) == []


def test_default_quant_missing(store: Store, gguf_repo: Path, local_hub: LocalHub) -> None:
    (gguf_repo / "Tiny-Q4_K_M.gguf").unlink()
    local_hub.repos[REPO].scan()
    with pytest.raises(SourceError) as info:
        pull(store, f"hf.co/{REPO}")
    assert str(info.value).endswith("it has: F16, Q5_K_S, Q8_0 (pull one with :Q5_K_S)")


def test_repo_with_one_unlabelled_gguf(
    store: Store, tmp_path: Path, make_gguf: Callable[..., Path], local_hub: LocalHub
) -> None:
    folder = tmp_path / "one"
    folder.mkdir()
    make_gguf(folder / "model.gguf")
    local_hub.add_repo("o/one", folder)
    assert pull(store, "hf.co/o/one").manifest.source["file"] == "model.gguf"


def test_quant_names_in_file_names() -> None:
    assert quant_of("Llama-3.2-1B-Instruct-Q4_K_M.gguf") == "Q4_K_M"
    assert quant_of("sub/qwen2.5-0.5b-instruct-q5_k_m.gguf") == "Q5_K_M"
    assert quant_of("model.IQ4_XS.gguf") == "IQ4_XS"
    assert quant_of("gemma-3-270m-it-bf16.gguf") == "BF16"
    assert quant_of("model-fp16.gguf") == "F16"
    assert quant_of("model.gguf") is None
    split = ["m-Q8_0-00001-of-00002.gguf", "m-Q8_0-00002-of-00002.gguf"]
    with pytest.raises(SourceError, match="split into 2 files"):
        pick_gguf(split, "Q8_0", "o/r")


def test_url_pull_resumes_and_checks_the_fragment(
    tmp_path: Path, gguf_repo: Path, local_hub: LocalHub
) -> None:
    file = gguf_repo / "Tiny-Q8_0.gguf"
    url = f"{local_hub.url}/{REPO}/resolve/main/{file.name}"
    size = file.stat().st_size
    local_hub.cut(REPO, file.name, after=size // 2)
    spec = f"{url}#sha256={sha256(file)}"
    with pytest.raises(SourceUnreachable, match="ended early"):
        pull(Store(tmp_path / "home"), spec)
    model = pull(Store(tmp_path / "home"), spec)
    assert model.model_path.read_bytes() == file.read_bytes()
    assert local_hub.sent[f"{REPO}/{file.name}"] == size
    assert model.manifest.source["verified"] is True
    assert model.name == "127.0.0.1/library/tiny-q8_0:latest"
    with pytest.raises(CorruptModel, match=r"sha256 mismatch .*not the one its #sha256= names"):
        pull(Store(tmp_path / "other"), f"{url}#sha256={'ab' * 32}")
    assert list((tmp_path / "other" / "manifests").rglob("*.yaml")) == []


def test_a_url_that_fails_at_once_leaves_no_partial_file(
    store: Store, local_hub: LocalHub, refused_port: int
) -> None:
    for url in (f"{local_hub.url}/nowhere.gguf", f"http://127.0.0.1:{refused_port}/m.gguf"):
        with pytest.raises((SourceError, SourceUnreachable)):
            pull(store, url)
    assert [p.name for p in store.blobs.root.iterdir()] == []


@pytest.mark.parametrize(
    "spec",
    [
        "https://example.com/model.safetensors",
        "https://example.com/model.gguf#md5=abc",
        "ftp://example.com/model.gguf",
    ],
)
def test_bad_urls(spec: str) -> None:
    from corral.registry.sources import parse_source

    with pytest.raises(SourceError):
        parse_source(spec)


def test_pulling_again_fetches_nothing_until_the_repo_has_a_new_commit(
    store: Store, gguf_repo: Path, local_hub: LocalHub
) -> None:
    spec, key = f"hf.co/{REPO}", f"{REPO}/Tiny-Q4_K_M.gguf"
    first = pull(store, spec)
    size = local_hub.sent[key]
    assert size > 0
    assert pull(store, spec).manifest.model == first.manifest.model
    assert local_hub.sent[key] == size  # asked for the commit, fetched nothing
    (gguf_repo / "Tiny-Q4_K_M.gguf").write_bytes((gguf_repo / "Tiny-Q8_0.gguf").read_bytes())
    local_hub.repos[REPO].scan()  # a new commit upstream
    newer = pull(store, spec)
    assert newer.manifest.model == f"sha256:{sha256(gguf_repo / 'Tiny-Q8_0.gguf')}"
    assert newer.manifest.source["revision"] == local_hub.repos[REPO].commit


def test_another_source_under_an_installed_name_is_pulled(
    store: Store, gguf_repo: Path, local_hub: LocalHub
) -> None:
    pull(store, f"hf://{REPO}")
    with pytest.raises(SourceError, match="revision deadbeef"):
        pull(store, f"hf://{REPO}@deadbeef")  # same name, another revision: checked
    base = f"{local_hub.url}/{REPO}/resolve/main"
    pull(store, f"{base}/Tiny-Q8_0.gguf")
    file = gguf_repo / "Tiny-F16.gguf"
    with pytest.raises(CorruptModel, match="sha256 mismatch"):
        pull(store, f"{base}/Tiny-Q8_0.gguf#sha256={sha256(file)}")  # another hash: checked


def test_a_file_already_stored_is_not_downloaded_again(
    store: Store, gguf_repo: Path, local_hub: LocalHub
) -> None:
    file = gguf_repo / "Tiny-Q8_0.gguf"
    first = pull(store, f"hf.co/{REPO}:Q8_0")
    sent = sum(local_hub.sent.values())
    url = f"{local_hub.url}/{REPO}/resolve/main/{file.name}#sha256={sha256(file)}"
    for spec in (f"hf://{REPO}/{file.name}", f"hf://{REPO}:tiny-q8_0.gguf", url):
        again = pull(store, spec)
        assert again.manifest.model == first.manifest.model and again.name != first.name
    assert sum(local_hub.sent.values()) == sent


def test_an_unreachable_hub_keeps_the_installed_model(
    store: Store, gguf_repo: Path, local_hub: LocalHub, refused_port: int, monkeypatch
) -> None:
    spec = f"hf.co/{REPO}"
    installed = pull(store, spec)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{refused_port}")
    said: list[str] = []
    again = pull(store, spec, progress=lambda p: said.append(p.status))
    assert again.manifest == installed.manifest
    assert any(s.startswith("cannot check for a newer version") for s in said), said
    assert said[-1] == "success"


def test_create_from_an_installed_hub_model_uses_it_as_it_is(
    store: Store, gguf_repo: Path, local_hub: LocalHub, refused_port: int, monkeypatch
) -> None:
    installed = pull(store, f"hf.co/{REPO}:Q8_0")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{refused_port}")  # hub gone
    for base in (installed.name, f"hf://{REPO}:Q8_0"):  # as listed, or the source it came from
        mine = create(store, "mine", Modelfile(from_=base, system="Be brief."))
        assert mine.manifest.model == installed.manifest.model
        assert mine.manifest.source["created_from"] == installed.name


def test_another_spelling_of_an_installed_source_is_the_same_source(
    store: Store, gguf_repo: Path, local_hub: LocalHub, refused_port: int, monkeypatch
) -> None:
    first = pull(store, f"hf://{REPO}")
    sent = sum(local_hub.sent.values())
    for spec in (first.name, f"hf.co/{REPO.lower()}", f"huggingface.co/{REPO}:latest"):
        assert pull(store, spec).digest == first.digest, spec
    assert sum(local_hub.sent.values()) == sent
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{refused_port}")
    assert pull(store, first.name).digest == first.digest  # hub gone: kept, as listed
