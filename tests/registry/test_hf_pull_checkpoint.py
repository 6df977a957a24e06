"""Pulling safetensors checkpoints from a local hub with the real huggingface_hub client:
download (resumable, verified), convert, quantize, register, with provenance; and every
way it can go wrong leaves nothing in the store."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import huggingface_hub as hf
import pytest

from corral.registry.errors import CorruptModel, PullCancelled, SourceError, SourceUnreachable
from corral.registry.progress import PullProgress
from corral.registry.pull import pull
from corral.registry.store import Store
from corral.runtime.engine import Done, Engine
from corral.runtime.gguf import GGUFFile
from corral.runtime.sampling import SamplerOptions
from hub_server import LocalHub

REPO = "test-org/tiny-llama"
SPEC = f"hf://{REPO}"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifests(store: Store) -> list[Path]:
    return list(store.manifests.rglob("*.yaml"))


@pytest.fixture
def ckpt(make_checkpoint: Callable[..., Path]) -> Path:
    return make_checkpoint("llama", "BF16")


def test_pull_converts_quantizes_and_records_provenance(
    store: Store, local_hub: LocalHub, ckpt: Path
) -> None:
    repo = local_hub.add_repo(REPO, ckpt)
    events: list[PullProgress] = []
    model = pull(store, SPEC, events.append)
    assert model.name == "hf.co/test-org/tiny-llama:latest"
    m = model.manifest
    assert (m.architecture, m.quantization) == ("llama", "Q4_K_M")
    src = m.source
    assert (src["kind"], src["repo"], src["revision"]) == ("huggingface", REPO, repo.commit)
    assert src["files"] == {f.name: sha256(f) for f in ckpt.iterdir()}
    assert src["converted_from"] == "safetensors BF16 (LlamaForCausalLM)"
    assert (src["quantized_from"], src["quantization"]) == ("BF16", "Q4_K_M")
    statuses = {e.status for e in events}
    assert {"converting to GGUF", "quantizing to Q4_K_M", "success"} <= statuses
    assert [p.name for p in store.blobs.root.iterdir()] == [model.digest.replace(":", "-")]
    eng = Engine.load(model.model_path, num_ctx=64)
    prompt = eng.tokenizer.encode("the cat", add_special=False)
    events_out = list(eng.generate(eng.new_session(), prompt, SamplerOptions.greedy(), 4))
    assert isinstance(events_out[-1], Done) and events_out[-1].eval_count >= 1


def test_unquantized_pull_keeps_the_checkpoint_values(
    store: Store, local_hub: LocalHub, ckpt: Path
) -> None:
    local_hub.add_repo(REPO, ckpt)
    model = pull(store, f"hf.co/{REPO}:BF16")
    assert model.name == "hf.co/test-org/tiny-llama:bf16"
    assert model.manifest.quantization == "BF16"
    assert model.manifest.source["quantized_from"] is None
    with GGUFFile.open(model.model_path) as g:
        assert g.tensors["blk.0.attn_q.weight"].qtype.name == "BF16"
        assert g.tensors["blk.0.attn_norm.weight"].qtype.name == "F32"


def test_sharded_checkpoint_gives_the_same_file(
    store: Store, local_hub: LocalHub, tmp_path: Path, make_checkpoint: Callable[..., Path]
) -> None:
    single = make_checkpoint("qwen3", "F16")
    sharded = make_checkpoint("qwen3", "F16", shards=2)
    assert (sharded / "model.safetensors.index.json").is_file()
    assert len(list(sharded.glob("model-0000?-of-00002.safetensors"))) == 2
    local_hub.add_repo("a/tiny-qwen3", single)
    local_hub.add_repo("b/tiny-qwen3", sharded)
    one = pull(store, "hf://a/tiny-qwen3:F16")
    two = pull(store, "hf://b/tiny-qwen3:F16")
    assert one.manifest.architecture == "qwen3"
    # the same GGUF but for general.source.huggingface.repository
    assert one.model_path.read_bytes().replace(b"a/tiny-qwen3", b"b/tiny-qwen3") == (
        two.model_path.read_bytes()
    )
    assert "model-00002-of-00002.safetensors" in two.manifest.source["files"]


def test_interrupted_download_resumes_on_the_next_pull(
    tmp_path: Path, local_hub: LocalHub, ckpt: Path
) -> None:
    local_hub.add_repo(REPO, ckpt)
    weights = ckpt / "model.safetensors"
    size, cut = weights.stat().st_size, weights.stat().st_size // 3
    local_hub.cut(REPO, "model.safetensors", after=cut)
    with pytest.raises(SourceUnreachable, match=f"ended early \\({cut} of {size} bytes\\)"):
        pull(Store(tmp_path / "home"), SPEC)
    partials = list((tmp_path / "home" / "blobs").glob("partial-hf-*"))
    assert [p.stat().st_size for p in partials if p.stat().st_size == cut] == [cut]
    assert not list((tmp_path / "home" / "manifests").rglob("*.yaml"))
    events: list[PullProgress] = []
    model = pull(Store(tmp_path / "home"), SPEC, events.append)  # a "restarted" daemon
    assert local_hub.sent[f"{REPO}/model.safetensors"] == size  # no byte sent twice
    gets = local_hub.file_requests(REPO, "model.safetensors")
    assert [r.headers.get("range") for r in gets] == [None, f"bytes={cut}-"]
    digest = f"sha256:{sha256(weights)}"
    resumed = [e.completed for e in events if e.digest == digest and e.completed]
    assert resumed[0] >= cut
    assert model.manifest.source["files"]["model.safetensors"] == sha256(weights)
    assert not list((tmp_path / "home" / "blobs").glob("partial-*"))


def test_hash_mismatch_is_refused_and_nothing_registered(
    store: Store, local_hub: LocalHub, ckpt: Path
) -> None:
    local_hub.add_repo(REPO, ckpt)
    local_hub.lie_about(REPO, "model.safetensors")
    with pytest.raises(CorruptModel, match=r"model\.safetensors from test-org/tiny-llama .*sha256"):
        pull(store, SPEC)
    assert manifests(store) == []
    assert not [p for p in store.blobs.root.iterdir() if p.name.startswith("sha256-")]
    assert not store.blobs.partial_path("hf-" + "0" * 64).exists()  # the bad download is gone


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"README.md": "# hi\n"}, "has no model weights: no .gguf file and no model.safetensors"),
        ({"pytorch_model.bin": "x", "config.json": "{}"}, "has weights only as pytorch_model.bin"),
    ],
)
def test_repo_without_weights(
    store: Store, local_hub: LocalHub, tmp_path: Path, files: dict[str, str], message: str
) -> None:
    folder = tmp_path / "empty-repo"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    local_hub.add_repo("test-org/empty", folder)
    with pytest.raises(SourceError, match=message):
        pull(store, "hf://test-org/empty")
    assert manifests(store) == []


def test_unsupported_architecture_is_named_before_weights_are_fetched(
    store: Store, local_hub: LocalHub, ckpt: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "gpt2"
    shutil.copytree(ckpt, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"architectures": ["GPT2LMHeadModel"]}))
    local_hub.add_repo("test-org/gpt2", folder)
    with pytest.raises(SourceError) as info:
        pull(store, "hf://test-org/gpt2")
    text = str(info.value)
    assert "architecture GPT2LMHeadModel is not supported" in text
    assert "supported: Gemma3ForCausalLM, " in text and "Qwen3ForCausalLM" in text
    assert local_hub.file_requests("test-org/gpt2", "model.safetensors") == []
    assert manifests(store) == []


def test_unknown_quantization_is_refused_before_downloading(
    store: Store, local_hub: LocalHub, ckpt: Path
) -> None:
    local_hub.add_repo(REPO, ckpt)
    with pytest.raises(SourceError, match="unknown quantization type 'Q9_X'; choose one of: F32"):
        pull(store, f"{SPEC}:Q9_X")
    assert local_hub.file_requests(REPO, "model.safetensors") == []


def test_hf_token_is_sent_to_the_hub(
    store: Store, local_hub: LocalHub, ckpt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local_hub.add_repo(REPO, ckpt, token="hf_sesame")
    gated = r"is gated: accept its terms on 127\.0\.0\.1:\d+; set HF_TOKEN where the daemon runs"
    with pytest.raises(SourceError, match=gated):
        pull(store, SPEC)
    monkeypatch.setenv("HF_TOKEN", "hf_sesame")
    pull(store, f"{SPEC}:F16")
    gets = local_hub.file_requests(REPO, "model.safetensors")
    assert [r.headers.get("authorization") for r in gets] == ["Bearer hf_sesame"]


def test_files_in_the_hf_cache_are_not_downloaded_again(
    store: Store, local_hub: LocalHub, ckpt: Path
) -> None:
    local_hub.add_repo(REPO, ckpt)
    hf.snapshot_download(REPO, endpoint=local_hub.url)  # the user's own earlier download
    before = local_hub.sent.copy()
    model = pull(store, f"{SPEC}:Q8_0")
    assert local_hub.sent == before
    assert model.manifest.quantization == "Q8_0"
    assert hf.try_to_load_from_cache(REPO, "model.safetensors") is not None  # left alone


def test_offline_pull_uses_the_hf_cache(
    store: Store, local_hub: LocalHub, ckpt: Path, refused_port: int, monkeypatch
) -> None:
    local_hub.add_repo(REPO, ckpt)
    hf.snapshot_download(REPO, endpoint=local_hub.url)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{refused_port}")
    model = pull(store, f"{SPEC}:F16")
    assert model.manifest.source["converted_to"] == "F16"


def test_recipe_quantization_is_produced(store: Store, local_hub: LocalHub, ckpt: Path) -> None:
    local_hub.add_repo(REPO, ckpt)
    folder = store.home / "Modelfiles"
    folder.mkdir(parents=True)
    (folder / "tiny-q8.yaml").write_text(f"name: tiny:q8\nsources: [{SPEC}]\nquantization: Q8_0\n")
    model = pull(store, "tiny:q8")
    assert model.manifest.quantization == "Q8_0"
    assert model.manifest.source["quantization"] == "Q8_0"


@pytest.mark.parametrize("stage", ["converting to GGUF", "quantizing to Q4_K_M"])
def test_cancel_during_conversion_leaves_nothing(
    store: Store, local_hub: LocalHub, ckpt: Path, stage: str
) -> None:
    local_hub.add_repo(REPO, ckpt)
    cancel = threading.Event()

    def progress(e: PullProgress) -> None:
        if e.status == stage:
            cancel.set()

    with pytest.raises(PullCancelled):
        pull(store, SPEC, progress, cancel)
    assert manifests(store) == []
    assert not [p for p in store.blobs.root.iterdir() if p.name.startswith(("sha256-", "tmp-"))]


def test_local_checkpoint_folder(store: Store, ckpt: Path) -> None:
    model = pull(store, str(ckpt))
    assert model.name == f"{ckpt.name}:latest"
    assert (model.manifest.quantization, model.manifest.source["kind"]) == ("Q4_K_M", "local")
    assert model.manifest.source["converted_from"] == "safetensors BF16 (LlamaForCausalLM)"
