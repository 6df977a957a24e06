"""ms:// pulls with the real modelscope client against a ModelScope hub served on 127.0.0.1
(tests/ms_server.py): GGUF repositories by quantization, safetensors checkpoints through
conversion, resumed downloads, sha256 checks, errors, tokens, the user's ModelScope cache,
and a real daemon pulling one."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import modelscope_hub.config
import numpy as np
import pytest

import assets
from corral.registry.catalog import Catalog
from corral.registry.convert.transforms import round_to
from corral.registry.errors import CorruptModel, SourceError, SourceUnreachable
from corral.registry.progress import PullProgress
from corral.registry.pull import pull, pull_target
from corral.registry.sources import is_direct_source, parse_source
from corral.registry.sources.hf import HfSource
from corral.registry.sources.ms import MsSource
from corral.registry.store import Store
from corral.runtime.engine import Done, Engine
from corral.runtime.gguf import GGUFFile
from corral.runtime.sampling import SamplerOptions
from hf_checkpoint import SMOLLM2_REPO, smollm2_checkpoint
from ms_server import ModelScopeHub
from serving import Daemon

GGUF_REPO = "test-org/Tiny-GGUF"
QUANTS = ("Q4_K_M", "Q8_0", "Q5_K_S", "F16")
CKPT_REPO = "test-org/tiny-llama"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifests(store: Store) -> list[Path]:
    return list(store.manifests.rglob("*.yaml"))


def point_at(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, endpoint: str) -> None:
    """The modelscope client's environment: this endpoint, no token, its home and cache
    in tmp_path, and its process-wide configuration read afresh."""
    for var in ("MODELSCOPE_DOMAIN", "MODELSCOPE_API_TOKEN", "MODELSCOPE_PREFER_AI_SITE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", endpoint)
    monkeypatch.setenv("MODELSCOPE_HOME", str(tmp_path / "ms-home"))
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms-cache"))
    monkeypatch.setattr(modelscope_hub.config, "_default_config", None)


@pytest.fixture
def ms_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[ModelScopeHub]:
    with ModelScopeHub() as hub:
        point_at(monkeypatch, tmp_path, hub.url)
        yield hub


@pytest.fixture
def gguf_repo(
    tmp_path: Path, make_gguf_repo: Callable[[Path, Sequence[str]], Path], ms_hub: ModelScopeHub
) -> Path:
    folder = make_gguf_repo(tmp_path / "gguf-repo", QUANTS)
    ms_hub.add_repo(GGUF_REPO, folder, tags=("v1.0",))
    return folder


@pytest.fixture
def ckpt(make_checkpoint: Callable[..., Path]) -> Path:
    return make_checkpoint("llama", "BF16")


# --- GGUF repositories -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "file", "tag"),
    [
        (f"ms://{GGUF_REPO}", "Tiny-Q4_K_M.gguf", "latest"),
        (f"ms://{GGUF_REPO}:q8_0", "Tiny-Q8_0.gguf", "q8_0"),
        (f"modelscope.cn/{GGUF_REPO}:Q5_K_S", "Tiny-Q5_K_S.gguf", "q5_k_s"),
        (f"ms://{GGUF_REPO}:tiny-f16.gguf", "Tiny-F16.gguf", "tiny-f16.gguf"),
        (f"ms://{GGUF_REPO}@v1.0/Tiny-Q8_0.gguf", "Tiny-Q8_0.gguf", "tiny-q8_0"),
    ],
)
def test_quant_selection(
    store: Store, gguf_repo: Path, ms_hub: ModelScopeHub, spec: str, file: str, tag: str
) -> None:
    name = f"modelscope.cn/test-org/tiny-gguf:{tag}"
    assert is_direct_source(spec)
    assert str(pull_target(spec)) == name
    events: list[PullProgress] = []
    model = pull(store, spec, events.append)
    assert model.name == name
    assert model.model_path.read_bytes() == (gguf_repo / file).read_bytes()
    src = model.manifest.source
    revision = "v1.0" if "@v1.0" in spec else "master"
    assert (src["kind"], src["repo"], src["revision"], src["endpoint"]) == (
        "modelscope",
        GGUF_REPO,
        revision,
        ms_hub.url,
    )
    assert (src["file"], src["sha256"]) == (file, sha256(gguf_repo / file))
    assert f"pulling {sha256(gguf_repo / file)[:12]}" in [e.status for e in events]
    assert [f.name for f in store.blobs.root.iterdir()] == [model.digest.replace(":", "-")]
    asked = [r for r in ms_hub.file_requests(GGUF_REPO, file) if r.path.startswith("/api/")]
    assert [r.query["Revision"] for r in asked] == [revision]  # then redirected to storage
    assert len(ms_hub.data_requests(GGUF_REPO, file)) == 1


def test_missing_quant_lists_what_exists(store: Store, gguf_repo: Path) -> None:
    with pytest.raises(SourceError) as info:
        pull(store, f"ms://{GGUF_REPO}:Q3_K_M")
    assert str(info.value) == (
        f"{GGUF_REPO} has no Q3_K_M GGUF file; it has: F16, Q4_K_M, Q5_K_S, Q8_0 "
        "(pull one with :Q4_K_M)"
    )
    assert manifests(store) == []


def test_modelscope_domain_is_honoured(
    store: Store, gguf_repo: Path, ms_hub: ModelScopeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MODELSCOPE_DOMAIN (the older variable) works as the client reads it: with a scheme
    it is taken as is (a bare domain would get https://)."""
    monkeypatch.delenv("MODELSCOPE_ENDPOINT")
    monkeypatch.setenv("MODELSCOPE_DOMAIN", ms_hub.url)
    model = pull(store, f"ms://{GGUF_REPO}:Q8_0")
    assert model.manifest.source["endpoint"] == ms_hub.url
    assert ms_hub.data_requests(GGUF_REPO, "Tiny-Q8_0.gguf")


# --- safetensors checkpoints -------------------------------------------------------------


def test_checkpoint_is_converted_quantized_and_runs(
    store: Store, ms_hub: ModelScopeHub, ckpt: Path
) -> None:
    ms_hub.add_repo(CKPT_REPO, ckpt)
    events: list[PullProgress] = []
    model = pull(store, f"ms://{CKPT_REPO}", events.append)
    assert model.name == "modelscope.cn/test-org/tiny-llama:latest"
    m = model.manifest
    assert (m.architecture, m.quantization) == ("llama", "Q4_K_M")
    src = m.source
    assert (src["kind"], src["repo"], src["revision"]) == ("modelscope", CKPT_REPO, "master")
    assert src["files"] == {f.name: sha256(f) for f in ckpt.iterdir()}
    assert src["converted_from"] == "safetensors BF16 (LlamaForCausalLM)"
    assert (src["quantized_from"], src["quantization"]) == ("BF16", "Q4_K_M")
    assert {"converting to GGUF", "quantizing to Q4_K_M", "success"} <= {e.status for e in events}
    assert not list(store.blobs.root.glob("partial-*"))  # consumed
    with GGUFFile.open(model.model_path) as g:  # no Hugging Face repository is claimed
        assert "general.source.huggingface.repository" not in g.metadata
    eng = Engine.load(model.model_path, num_ctx=64)
    prompt = eng.tokenizer.encode("the cat", add_special=False)
    out = list(eng.generate(eng.new_session(), prompt, SamplerOptions.greedy(), 4))
    assert isinstance(out[-1], Done) and out[-1].eval_count >= 1


def test_interrupted_download_resumes_on_the_next_pull(
    tmp_path: Path, ms_hub: ModelScopeHub, ckpt: Path
) -> None:
    ms_hub.add_repo(CKPT_REPO, ckpt)
    weights = ckpt / "model.safetensors"
    size, cut = weights.stat().st_size, weights.stat().st_size // 3
    ms_hub.cut(CKPT_REPO, "model.safetensors", after=cut)  # the connection drops once
    with pytest.raises(SourceUnreachable, match=f"ended early \\({cut} of {size} bytes\\)"):
        pull(Store(tmp_path / "home"), f"ms://{CKPT_REPO}:F16")
    partials = list((tmp_path / "home" / "blobs").glob("partial-ms-*"))
    assert [p.name for p in partials if p.stat().st_size == cut] == [
        f"partial-ms-{sha256(weights)}"
    ]
    assert not list((tmp_path / "home" / "manifests").rglob("*.yaml"))
    model = pull(Store(tmp_path / "home"), f"ms://{CKPT_REPO}:F16")  # a "restarted" daemon
    assert ms_hub.sent[f"{CKPT_REPO}/model.safetensors"] == size  # no byte sent twice
    ranges = [r.headers.get("range") for r in ms_hub.data_requests(CKPT_REPO, "model.safetensors")]
    assert ranges == [None, f"bytes={cut}-"]
    assert model.manifest.source["files"]["model.safetensors"] == sha256(weights)
    assert not list((tmp_path / "home" / "blobs").glob("partial-*"))


def test_hash_mismatch_is_refused_and_nothing_registered(
    store: Store, ms_hub: ModelScopeHub, ckpt: Path, store_files: Callable
) -> None:
    ms_hub.add_repo(CKPT_REPO, ckpt)
    ms_hub.lie_about(CKPT_REPO, "model.safetensors")
    with pytest.raises(CorruptModel) as info:
        pull(store, f"ms://{CKPT_REPO}")
    assert str(info.value) == (
        f"model.safetensors from {CKPT_REPO} is corrupt: sha256 mismatch (expected {'0' * 64}, "
        f"got {sha256(ckpt / 'model.safetensors')}); try the pull again"
    )
    assert manifests(store) == []
    assert not [f for f in store_files(store) if "sha256-" in f or "model.safetensors" in f]
    assert not store.blobs.partial_path("ms-" + "0" * 64).exists()  # the bad bytes are gone


# --- errors, tokens, unreachable hubs ------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("ms://test-org/nope", "model test-org/nope not found on {host}"),
        (f"ms://{GGUF_REPO}@v9", f"revision v9 not found in {GGUF_REPO} on {{host}}"),
        (
            f"ms://{GGUF_REPO}/Tiny-Q2_K.gguf",
            f"Tiny-Q2_K.gguf not found in {GGUF_REPO}@master on {{host}}",
        ),
    ],
)
def test_unknown_repo_revision_or_file_is_one_clear_line(
    store: Store, gguf_repo: Path, ms_hub: ModelScopeHub, spec: str, message: str
) -> None:
    with pytest.raises(SourceError) as info:
        pull(store, spec)
    assert str(info.value) == message.format(host=ms_hub.url.removeprefix("http://"))
    assert manifests(store) == []


def test_token_goes_to_the_hub_and_never_to_storage(
    store: Store,
    ms_hub: ModelScopeHub,
    tmp_path: Path,
    make_gguf: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = tmp_path / "private"
    folder.mkdir()
    make_gguf(folder / "Secret-Q8_0.gguf")
    ms_hub.add_repo("test-org/private", folder, token="ms-sesame")
    with pytest.raises(SourceError, match=r"test-org/private is private on 127\.0\.0\.1:\d+: set "):
        pull(store, "ms://test-org/private")
    monkeypatch.setenv("MODELSCOPE_API_TOKEN", "ms-sesame")
    model = pull(store, "ms://test-org/private")
    assert model.manifest.source["file"] == "Secret-Q8_0.gguf"
    api = [r for r in ms_hub.requests if r.path.startswith("/api/v1/models/test-org/private")]
    assert api and all(r.headers.get("authorization") == "Bearer ms-sesame" for r in api[-3:])
    storage = ms_hub.data_requests("test-org/private", "Secret-Q8_0.gguf")
    assert len(storage) == 1
    assert "authorization" not in storage[0].headers and "cookie" not in storage[0].headers


def test_refused_hub_fails_over_to_the_next_source(
    store: Store,
    tiny_gguf: Path,
    refused_port: int,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    point_at(monkeypatch, tmp_path, f"http://127.0.0.1:{refused_port}")
    folder = store.home / "Modelfiles"
    folder.mkdir(parents=True)
    (folder / "ms-fallback.yaml").write_text(
        f"name: ms:fallback\nsources:\n  - ms://{GGUF_REPO}\n  - {tiny_gguf}\nlicense: mit\n"
    )
    events: list[PullProgress] = []
    model = pull(store, "ms:fallback", events.append)
    assert model.manifest.source["kind"] == "local"
    lines = [e.status for e in events if "trying" in e.status]
    assert lines == [
        f"127.0.0.1:{refused_port} unreachable (connection refused), trying {tiny_gguf}"
    ]


def test_silent_hub_times_out_without_retrying(
    store: Store, silent_server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    point_at(monkeypatch, tmp_path, f"http://127.0.0.1:{silent_server.port}")
    with pytest.raises(SourceUnreachable, match=r"^127\.0\.0\.1:\d+ unreachable \(timed out\)$"):
        pull(store, f"ms://{GGUF_REPO}")
    assert len(silent_server.connections) == 1  # the client's retry loop is off


# --- the user's ModelScope cache -------------------------------------------------------------


def test_the_modelscope_cache_is_used_and_offline_too(
    store: Store,
    gguf_repo: Path,
    ms_hub: ModelScopeHub,
    tmp_path: Path,
    refused_port: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from modelscope.hub.snapshot_download import snapshot_download

    # the user's own earlier download, by the modelscope client itself
    snapshot = Path(snapshot_download(GGUF_REPO, cache_dir=str(tmp_path / "ms-cache")))
    assert (snapshot / "Tiny-Q8_0.gguf").read_bytes() == (gguf_repo / "Tiny-Q8_0.gguf").read_bytes()
    before = ms_hub.sent.copy()
    model = pull(store, f"ms://{GGUF_REPO}:Q8_0")
    assert ms_hub.sent == before  # verified from the cache, not downloaded again
    assert model.manifest.source["sha256"] == sha256(gguf_repo / "Tiny-Q8_0.gguf")
    assert (snapshot / "Tiny-Q8_0.gguf").is_file()  # left alone
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", f"http://127.0.0.1:{refused_port}")
    offline = pull(Store(tmp_path / "offline"), f"ms://{GGUF_REPO}:F16")
    assert offline.model_path.read_bytes() == (gguf_repo / "Tiny-F16.gguf").read_bytes()
    assert offline.manifest.source["revision"] == "master"


def test_recipes_fall_back_to_the_same_checkpoint_on_modelscope(tmp_path: Path) -> None:
    on_modelscope = {}
    for recipe in Catalog.for_home(tmp_path).recipes():
        sources = [parse_source(spec) for spec in recipe.sources]
        for source in sources[1:]:
            if isinstance(source, MsSource):
                assert isinstance(sources[0], HfSource)
                assert (source.repo_id, source.filename, source.tag) == (
                    sources[0].repo_id,
                    None,
                    None,
                )
                on_modelscope[recipe.name] = source.repo_id
    assert on_modelscope == {
        "qwen2.5:0.5b": "Qwen/Qwen2.5-0.5B-Instruct",
        "qwen2.5:1.5b": "Qwen/Qwen2.5-1.5B-Instruct",
        "qwen2.5-coder:0.5b": "Qwen/Qwen2.5-Coder-0.5B-Instruct",
        "qwen3:0.6b": "Qwen/Qwen3-0.6B",
    }


# --- a real model ---------------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_checkpoint_from_modelscope(ms_hub: ModelScopeHub, tmp_path: Path) -> None:
    """SmolLM2-135M-Instruct as a safetensors checkpoint (derived from the real GGUF,
    tests/hf_checkpoint.py) pulled unquantized: the original weights, and it answers."""
    ms_hub.add_repo(SMOLLM2_REPO, smollm2_checkpoint())
    model = pull(Store(tmp_path / "home"), f"ms://{SMOLLM2_REPO}:BF16")
    m = model.manifest
    assert (m.architecture, m.quantization, m.parameter_count) == ("llama", "BF16", 134515008)
    assert (m.license, m.source["kind"]) == ("apache-2.0", "modelscope")
    with GGUFFile.open(assets.smollm2_gguf()) as a, GGUFFile.open(model.model_path) as b:
        assert set(a.tensors) == set(b.tensors)
        for name in ("token_embd.weight", "blk.0.attn_q.weight", "blk.29.ffn_down.weight"):
            expected = round_to(a.load_tensor(name), "BF16")
            np.testing.assert_array_equal(b.load_tensor(name), expected, err_msg=name)
    eng = Engine.load(model.model_path, num_ctx=128)
    ids = eng.tokenizer.encode("The capital of France is", add_special=True)
    done = list(eng.generate(eng.new_session(), ids, SamplerOptions.greedy(), 4))[-1]
    assert isinstance(done, Done)
    assert eng.tokenizer.decode(list(done.generated)).startswith(" Paris")


# --- a real daemon -------------------------------------------------------------------------


def test_corral_pull_through_a_real_daemon(
    gguf_repo: Path, ms_hub: ModelScopeHub, tmp_path: Path
) -> None:
    env = {"MODELSCOPE_ENDPOINT": ms_hub.url, "MODELSCOPE_HOME": str(tmp_path / "ms-home")}
    with Daemon.start_in(tmp_path / "daemon-home", **env) as daemon:

        def corral(*args: str) -> subprocess.CompletedProcess[str]:
            run = [sys.executable, "-m", "corral.client", *args]
            return subprocess.run(run, env=daemon.env, capture_output=True, text=True, timeout=300)

        pulled = corral("pull", f"ms://{GGUF_REPO}:Q8_0")
        assert pulled.returncode == 0, pulled.stderr
        assert pulled.stderr.strip().splitlines()[-1] == "success"
        listed = corral("list")
        assert re.search(r"^modelscope\.cn/test-org/tiny-gguf:q8_0\s", listed.stdout, re.M)
        missing = corral("pull", f"ms://{GGUF_REPO}:Q2_K")
        assert missing.returncode != 0
        assert f"{GGUF_REPO} has no Q2_K GGUF file; it has: F16, Q4_K_M" in missing.stderr
        assert "Traceback" not in missing.stderr


def test_pulling_again_fetches_only_when_the_revision_has_new_files(
    store: Store, gguf_repo: Path, ms_hub: ModelScopeHub
) -> None:
    spec, file = f"ms://{GGUF_REPO}", "Tiny-Q4_K_M.gguf"
    first = pull(store, spec)
    assert pull(store, f"modelscope.cn/{GGUF_REPO}:latest").digest == first.digest  # same
    assert len(ms_hub.data_requests(GGUF_REPO, file)) == 1  # listed, not fetched again
    (gguf_repo / file).write_bytes((gguf_repo / "Tiny-Q8_0.gguf").read_bytes())
    ms_hub.add_repo(GGUF_REPO, gguf_repo, tags=("v1.0",))  # the branch moved on
    assert pull(store, spec).manifest.source["sha256"] == sha256(gguf_repo / "Tiny-Q8_0.gguf")
