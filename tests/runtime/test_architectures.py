"""llama, qwen2, qwen3 and gemma3 against llama.cpp.

Tiny random-weight models of each architecture (tests/tiny_archs.py) are run by corral and
by llama.cpp (xllamacpp, live, f32 KV cache, no flash attention: float math), and their
next-token log-probabilities compared over the whole vocabulary at every position.

The real models (slow) are compared with llama.cpp's teacher-forced predictions over 256
tokens of the GPL-3 text recorded in tests/data/teacher_forced.json (see its "command").
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import assets
from corral.runtime.arch import ARCHITECTURES, architecture
from corral.runtime.arch.gemma3 import Gemma3
from corral.runtime.arch.llama import Llama
from corral.runtime.arch.qwen2 import Qwen2
from corral.runtime.arch.qwen3 import Qwen3
from corral.runtime.gguf import GGUFError, GGUFFile
from llamacpp_ref import EXACT, LlamaCpp
from tiny import tiny_vocab, write_tiny_llama
from tiny_archs import ArchSpec, TinyShape, write_tiny_arch

VOCAB = len(tiny_vocab()[0])
CONTEXT = [int(t) for t in np.random.default_rng(1).integers(3, VOCAB, 14)]
# Gemma3 with 7 layers: 0-4 and 6 slide over 5 tokens (RoPE base 10000), layer 5 is global
# (its own base, here 1e6, and any linear RoPE scaling); 14 tokens exceed the window.
GEMMA = TinyShape(n_layers=7, head_dim=32, sliding_window=5, rope_base=1e6)
LINEAR_ROPE: dict[str, float | str] = {"rope.scaling.type": "linear", "rope.scaling.factor": 8.0}
TINY: dict[str, tuple[str, TinyShape]] = {
    "llama": ("llama", TinyShape()),
    "qwen2": ("qwen2", TinyShape()),
    "qwen3": ("qwen3", TinyShape(head_dim=32)),  # H*D = 128 != d_model = 64
    "gemma3": ("gemma3", GEMMA),
    "gemma3-linear-rope": ("gemma3", replace(GEMMA, extra_metadata=LINEAR_ROPE)),
}
# ggml's CPU GELU reads a float16 table (input and output rounded to f16): about 1e-3 in
# log-probabilities. Structural mistakes (window, RoPE base, norms) move them by more than 1.
ATOL = {"llama": 1e-4, "qwen2": 1e-4, "qwen3": 1e-4, "gemma3": 1e-2}

REFERENCE = json.loads((Path(__file__).parent.parent / "data" / "teacher_forced.json").read_text())
REAL: dict[str, Callable[[], Path]] = {
    "smollm2": assets.smollm2_gguf,
    "qwen25_coder": assets.qwen25_coder_gguf,
    "gemma3": assets.gemma3_gguf,
}
CONFIDENT_GAP = 1.0  # llama.cpp's top-1 logit leads top-2 by at least this much
MIN_AGREEMENT = 0.95
EXACT_GAP = 0.05  # float math: near-ties below this may flip with summation order
EXACT_LOGPROB_ATOL = {"smollm2": 0.005, "qwen25_coder": 0.005, "gemma3": 0.02}  # gemma: GELU


def load(path: Path, bf16: bool = True) -> Llama:
    with GGUFFile.open(path) as gguf:
        return architecture(str(gguf.metadata["general.architecture"])).from_gguf(gguf, bf16)


def all_logits(model: Llama, ids: list[int]) -> np.ndarray:
    """Teacher-forced logits of every position: (T, V)."""
    return model.logits(model.hidden(np.array(ids), model.new_cache(len(ids))))


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x -= x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


@pytest.fixture(scope="module", params=sorted(TINY))
def tiny(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    arch, shape = TINY[request.param]
    path = write_tiny_arch(tmp_path_factory.mktemp("tiny") / f"{request.param}.gguf", arch, shape)
    return arch, path, load(path)


def test_registered_by_gguf_name() -> None:
    expected = {"llama": Llama, "qwen2": Qwen2, "qwen3": Qwen3, "gemma3": Gemma3}
    assert {name: ARCHITECTURES.get(name) for name in expected} == expected
    assert [Qwen2.rope_style, Qwen3.rope_style, Gemma3.rope_style] == ["neox"] * 3
    assert Llama.rope_style == "normal"


def test_tiny_model_matches_llamacpp_at_every_position(tiny: tuple) -> None:
    arch, path, model = tiny
    assert type(model) is ARCHITECTURES[arch]
    ours = log_softmax(all_logits(model, CONTEXT))  # (T, V)
    reference = LlamaCpp(path, EXACT)
    for n in range(1, len(CONTEXT) + 1):
        ids, logprobs = zip(*reference.next_token_logprobs(CONTEXT[:n], VOCAB), strict=True)
        assert len(ids) == VOCAB
        np.testing.assert_allclose(
            ours[n - 1, list(ids)], logprobs, atol=ATOL[arch], err_msg=f"{arch}, position {n - 1}"
        )


def test_prefill_in_chunks_equals_token_by_token(tiny: tuple) -> None:
    """The KV cache, the causal mask and the sliding window agree however a text is split."""
    _, _, model = tiny
    tokens = np.array(CONTEXT)
    whole = all_logits(model, CONTEXT)  # (T, V)
    cache = model.new_cache(len(tokens))
    chunks = [model.logits(model.hidden(part, cache)) for part in np.split(tokens, [6, 9])]
    np.testing.assert_allclose(np.concatenate(chunks), whole, atol=1e-4)
    cache = model.new_cache(len(tokens))
    steps = np.stack([model.forward(tokens[i : i + 1], cache) for i in range(len(tokens))])
    np.testing.assert_allclose(steps, whole, atol=1e-4)


def test_sliding_window_and_global_layers(tiny: tuple) -> None:
    arch, _, model = tiny
    windows = [model.window(i) for i in range(model.config.n_layers)]
    assert windows == ([5, 5, 5, 5, 5, 0, 5] if arch == "gemma3" else [0] * len(windows))


def test_missing_arch_tensors_are_named(tmp_path: Path) -> None:
    path = write_tiny_arch(tmp_path / "q.gguf", "qwen2", spec=ArchSpec(qkv_bias=False))
    with pytest.raises(GGUFError, match=r"missing tensors for qwen2: blk\.0\.attn_q\.bias"):
        load(path)
    path = write_tiny_arch(tmp_path / "g.gguf", "gemma3", spec=ArchSpec(qk_norm=True))
    with pytest.raises(GGUFError, match=r"missing tensors for gemma3: blk\.0\.post_attention"):
        load(path)


@pytest.mark.parametrize(
    ("misstated", "problem"),
    [
        ({"attention.head_count": 3}, r"tensor blk\.0\.attn_q\.weight has shape \(64, 64\) "),
        ({"attention.head_count_kv": 3}, r"tensor blk\.0\.attn_k\.weight has shape"),
        ({"embedding_length": 65}, r"tensor token_embd\.weight has shape \(\d+, 64\)"),
        ({"feed_forward_length": 100}, r"tensor blk\.0\.ffn_gate\.weight has shape"),
        ({"context_length": 0}, r"llama\.context_length must be positive"),
    ],
)
def test_metadata_that_disagrees_with_the_tensors_is_refused_at_load(
    tmp_path: Path, misstated: dict[str, int], problem: str
) -> None:
    """Not a reshape error mid-generation (head counts), nor a model that runs wrongly
    (an embedding length or FFN width the matrices do not have)."""
    path = write_tiny_llama(tmp_path / "bad.gguf", misstated=misstated)
    with pytest.raises(GGUFError, match=problem):
        load(path)


def test_unsupported_rope_scaling_is_refused_at_load(tmp_path: Path) -> None:
    shape = TinyShape(extra_metadata={"rope.scaling.type": "yarn", "rope.scaling.factor": 4.0})
    path = write_tiny_arch(tmp_path / "y.gguf", "qwen2", shape)
    with pytest.raises(GGUFError, match=r"RoPE scaling 'yarn' is not supported"):
        load(path)


@pytest.fixture(scope="module", params=sorted(REAL))
def real(request: pytest.FixtureRequest) -> tuple[str, np.ndarray]:
    """A real model's teacher-forced logits over the reference's 256 GPL-3 tokens, as
    corral runs it (bfloat16 matrices): (T, V)."""
    name = request.param
    return name, all_logits(load(REAL[name]()), REFERENCE["models"][name]["ids"])


@pytest.fixture(scope="module", params=sorted(REAL))
def real_float32(request: pytest.FixtureRequest) -> tuple[str, np.ndarray]:
    """The same with float32 matrices (`bf16=False`): llama.cpp's own float math."""
    name = request.param
    return name, all_logits(load(REAL[name](), bf16=False), REFERENCE["models"][name]["ids"])


@pytest.mark.slow
def test_teacher_forced_argmax_matches_llamacpp(real: tuple[str, np.ndarray]) -> None:
    """Against the shipped file at llama.cpp's default settings (quantized activations)."""
    name, logits = real
    top2 = np.array(REFERENCE["models"][name]["top2"])  # (T, 4): id1, logprob1, id2, logprob2
    theirs, gap = top2[:, 0].astype(int), top2[:, 1] - top2[:, 3]
    ours = logits.argmax(axis=-1)  # (T,)
    confident_misses = np.flatnonzero((gap >= CONFIDENT_GAP) & (ours != theirs))
    assert confident_misses.size == 0, f"{name}: differs where llama.cpp is confident"
    agreement = np.mean(ours == theirs)
    assert agreement >= MIN_AGREEMENT, f"{name}: {agreement:.1%} identical to llama.cpp"


@pytest.mark.slow
def test_teacher_forced_logits_match_llamacpp_float_math(
    real_float32: tuple[str, np.ndarray],
) -> None:
    """Against llama.cpp on an all-F32 copy with an f32 KV cache: the same float math, so
    the argmax agrees but for razor-thin ties and top-1 log-probabilities agree closely."""
    name, logits = real_float32
    exact = np.array(REFERENCE["models"][name]["exact"]["top2"])  # (T, 4)
    theirs, gap = exact[:, 0].astype(int), exact[:, 1] - exact[:, 3]
    ours = logits.argmax(axis=-1)  # (T,)
    assert np.flatnonzero((gap >= EXACT_GAP) & (ours != theirs)).size == 0
    peak = logits.max(axis=-1)  # (T,)
    log_z = peak + np.log(np.exp(logits - peak[:, None]).sum(axis=-1, dtype=np.float64))
    ours_logprob = logits[np.arange(len(theirs)), theirs] - log_z  # (T,)
    np.testing.assert_allclose(ours_logprob, exact[:, 1], atol=EXACT_LOGPROB_ATOL[name])
