"""The whole pull pipeline on a real model (slow): SmolLM2-135M-Instruct as a Hugging Face
checkpoint (derived from the real GGUF, tests/hf_checkpoint.py) served by a local hub,
`pull hf://HuggingFaceTB/SmolLM2-135M-Instruct` -> download -> convert -> quantize -> run,
and llama.cpp (xllamacpp) loading the very file corral wrote agrees with corral."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest

import assets
from corral.registry.convert import Checkpoint, convert_checkpoint
from corral.registry.convert.transforms import round_to
from corral.registry.pull import pull
from corral.registry.store import InstalledModel, Store
from corral.runtime.engine import Done, Engine
from corral.runtime.gguf import GGUFFile
from corral.runtime.sampling import SamplerOptions
from hf_checkpoint import SMOLLM2_REPO, smollm2_checkpoint
from hub_server import LocalHub
from llamacpp_ref import EXACT, LlamaCpp

pytestmark = pytest.mark.slow

N_TOKENS = 16
NEAR_TIE = 0.5  # llama.cpp's top-2 logit gap below which its own settings disagree (ASSETS.md)
MIN_AGREED = 16  # tokens agreed over all prompts before any near-tie
TOKENIZER_KEYS = (
    "tokenizer.ggml.model",
    "tokenizer.ggml.pre",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.merges",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.padding_token_id",
    "tokenizer.ggml.add_bos_token",
    "tokenizer.ggml.add_space_prefix",
    "tokenizer.chat_template",
)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHub]:
    cache = tmp_path_factory.mktemp("hf-cache")
    with pytest.MonkeyPatch.context() as mp, LocalHub() as hub:
        mp.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
        mp.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(cache / "no-token"))
        mp.delenv("HF_TOKEN", raising=False)
        mp.setenv("HF_ENDPOINT", hub.url)
        hub.add_repo(SMOLLM2_REPO, smollm2_checkpoint())
        yield hub


@pytest.fixture(autouse=True)
def hub_endpoint(isolated_env: None, hub: LocalHub, monkeypatch: pytest.MonkeyPatch) -> None:
    """After conftest's isolation (which points HF_ENDPOINT nowhere): point it at the hub."""
    monkeypatch.setenv("HF_ENDPOINT", hub.url)


@pytest.fixture(scope="module")
def pulled(hub: LocalHub, tmp_path_factory: pytest.TempPathFactory) -> InstalledModel:
    return pull(Store(tmp_path_factory.mktemp("home")), f"hf://{SMOLLM2_REPO}")


def llamacpp_greedy(ref: LlamaCpp, ids: list[int], eog: frozenset[int]) -> tuple[list, list]:
    """llama.cpp's greedy continuation and, per step, its top-1 minus top-2 logit."""
    context, tokens, gaps = list(ids), [], []
    for _ in range(N_TOKENS):
        (best, lp1), (_, lp2) = ref.next_token_logprobs(context, 2, cache_prompt=True)
        tokens.append(best)
        gaps.append(lp1 - lp2)
        if best in eog:
            break
        context.append(best)
    return tokens, gaps


def agreed_until_near_tie(ours: list[int], theirs: list[int], gaps: list[float]) -> int:
    for i, (a, b) in enumerate(zip(ours, theirs, strict=False)):
        if a != b:
            assert gaps[i] < NEAR_TIE, f"step {i}: corral {a}, llama.cpp {b} (gap {gaps[i]:.2f})"
            return i
    return min(len(ours), len(theirs))


def test_pull_converts_quantizes_and_runs_like_llama_cpp(pulled: InstalledModel) -> None:
    m = pulled.manifest
    assert pulled.name == "hf.co/huggingfacetb/smollm2-135m-instruct:latest"
    assert (m.architecture, m.quantization, m.parameter_count) == ("llama", "Q4_K_M", 134515008)
    src = m.source
    assert src["converted_from"] == "safetensors BF16 (LlamaForCausalLM)"
    assert (src["quantized_from"], src["quantization"]) == ("BF16", "Q4_K_M")
    assert set(src["files"]) >= {"config.json", "tokenizer.json", "model.safetensors"}
    assert m.license == "apache-2.0"  # from the model card
    eng = Engine.load(pulled.model_path, num_ctx=512)
    ref = LlamaCpp(pulled.model_path, EXACT)
    chat = eng.render_chat([{"role": "user", "content": "What is the capital of France?"}])
    agreed = 0
    for prompt in ("The capital of France is", chat, "def fibonacci(n):"):
        ids = eng.tokenizer.encode(prompt, add_special=True, parse_special=True)
        assert ids == ref.tokenize(prompt), prompt  # the converted tokenizer, in both
        events = list(eng.generate(eng.new_session(), ids, SamplerOptions.greedy(), N_TOKENS))
        done = events[-1]
        assert isinstance(done, Done)
        theirs, gaps = llamacpp_greedy(ref, ids, eng.tokenizer.eog_ids)
        agreed += agreed_until_near_tie(list(done.generated), theirs, gaps)
    print(f"corral and llama.cpp agreed on {agreed} greedy tokens before any near-tie")
    assert agreed >= MIN_AGREED


def test_unquantized_conversion_is_the_original_model(hub: LocalHub, tmp_path: Path) -> None:
    model = pull(Store(tmp_path / "home"), f"hf.co/{SMOLLM2_REPO}:BF16")
    with GGUFFile.open(assets.smollm2_gguf()) as a, GGUFFile.open(model.model_path) as b:
        assert set(a.tensors) == set(b.tensors)
        for name in a.tensors:
            original = a.load_tensor(name)
            expected = original if original.ndim == 1 else round_to(original, "BF16")
            np.testing.assert_array_equal(b.load_tensor(name), expected, err_msg=name)
        for key in TOKENIZER_KEYS:
            assert np.array_equal(a.metadata[key], b.metadata[key]), key
        for key in [k for k in a.metadata if k.startswith("llama.")]:
            assert a.metadata[key] == b.metadata[key], key
        assert b.metadata["general.source.huggingface.repository"] == SMOLLM2_REPO
        assert b.metadata["general.license"] == "apache-2.0"
    # the sharded checkpoint of the same model gives the same file, byte for byte
    hub.add_repo(SMOLLM2_REPO, smollm2_checkpoint(shards=2))
    sharded = pull(Store(tmp_path / "home2"), f"hf.co/{SMOLLM2_REPO}:BF16")
    assert "model-00002-of-00002.safetensors" in sharded.manifest.source["files"]
    assert sharded.digest == model.digest
    hub.add_repo(SMOLLM2_REPO, smollm2_checkpoint())


def test_conversion_memory_is_bounded_by_the_largest_tensor(tmp_path: Path) -> None:
    """F16 from BF16 casts every tensor: Python-visible memory (NumPy included) peaks at
    one tensor plus a constant, far below the model's size."""
    ckpt = Checkpoint.from_folder(smollm2_checkpoint())
    tracemalloc.start()
    try:
        result = convert_checkpoint(ckpt, tmp_path / "f16.gguf", outtype="F16")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    size = (tmp_path / "f16.gguf").stat().st_size
    print(f"peak {peak / 1e6:.0f} MB, largest tensor {result.largest_tensor_bytes / 1e6:.0f} MB")
    assert peak < 1.5 * result.largest_tensor_bytes + (48 << 20)
    assert peak < size / 2
