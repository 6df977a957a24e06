"""corral's quantizers against llama.cpp's bytes, gguf-py's bytes and llama-quantize's choices.

Reference data (tests/data/make_quant_refs.py writes it with a llama-quantize built from
the llama-cpp-python 0.3.36 sdist): quant_blocks.npz holds llama.cpp's own encoding of
awkward rows for every type; quant_plans.json the tensor types llama-quantize chose for
real models per mix.
"""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import gguf
import numpy as np
import pytest

from corral.runtime.engine import Engine
from corral.runtime.gguf import GGUFFile
from corral.runtime.quantize import (
    ModelShape,
    QuantizeProgress,
    TensorSpec,
    UnknownMix,
    UnsupportedTarget,
    get_mix,
    plan,
    quantize,
    quantize_gguf,
    rewrite,
)
from corral.runtime.quants import QUANT_TYPES_BY_NAME
from tiny import write_tiny_llama

DATA = Path(__file__).resolve().parent.parent / "data"
LEGACY = ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1")
K_TYPES = ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")
PLANS = json.loads((DATA / "quant_plans.json").read_text())["models"]


def awkward(seed: int) -> np.ndarray:
    """(24, 512) float32 rows of hard cases, no -0.0 (see test_signed_zeros...)."""
    rng = np.random.default_rng(seed)
    rows = [
        np.zeros(512),  # all-zero blocks
        -np.abs(rng.standard_normal(512)),  # negative-only
        np.abs(rng.standard_normal(512)) + 1.0,  # positive-only, min far from 0
        np.full(512, -2.5),  # constant
        rng.standard_normal(512) * 1e-30,  # tiny: scales underflow float16
        rng.standard_normal(512) * 1e4,  # huge: scales overflow float16
        np.float16(rng.standard_normal(512)).astype(np.float32),
        rng.integers(-8, 8, 512) * 0.5,  # exact ties for the rounding
        rng.standard_t(2, 512),  # outliers
        np.where(rng.random(512) < 0.1, rng.standard_normal(512), 0.0),  # sparse, +0.0
    ]
    rows += [rng.standard_normal(512) * rng.uniform(0.01, 3) for _ in range(14)]
    return np.stack(rows).astype(np.float32)


def gguf_py(x: np.ndarray, name: str) -> np.ndarray:
    encoded = gguf.quants.quantize(x, gguf.GGMLQuantizationType[name])
    return encoded.view(np.uint8).reshape(x.shape[0], -1)


@pytest.mark.parametrize("name", LEGACY)
@pytest.mark.parametrize("seed", [0, 1])
def test_legacy_types_are_byte_identical_to_gguf_py(name: str, seed: int) -> None:
    x = awkward(seed)
    np.testing.assert_array_equal(quantize(x, name), gguf_py(x, name))


@pytest.mark.parametrize("name", ["F16", "BF16"])
def test_float_types_round_to_nearest_even_like_gguf_py(name: str) -> None:
    specials = [np.nan, -np.nan, np.inf, -np.inf, 3.4e38, 1e-40, -1e-45, 65520.0, 1 + 2**-8]
    x = np.concatenate([awkward(2).reshape(-1), specials]).astype(np.float32)[None, :]
    with np.errstate(over="ignore"):
        ref = gguf_py(x, name)
    np.testing.assert_array_equal(quantize(x, name), ref)


@pytest.mark.parametrize("name", LEGACY + K_TYPES)
def test_bytes_equal_llama_cpp_reference_quantizers(name: str) -> None:
    """llama.cpp's ggml_quantize_chunk output, stored. It includes blocks of signed zeros,
    where llama.cpp keeps the first zero's sign for Q4_1/Q5_1's min (and +0.0 scales),
    as corral does; gguf-py's NumPy min may give -0.0 there."""
    ref = np.load(DATA / "quant_blocks.npz")
    ours = quantize(ref["x"], name)
    bad = np.nonzero((ours != ref[name]).any(axis=1))[0]
    assert bad.size == 0, f"{name}: rows {bad.tolist()} differ from llama.cpp"


def simple_reference(x: np.ndarray, name: str) -> np.ndarray:
    """Plain rounding with exact float scales, the same bits and sub-block size: min/max
    affine for the types with mins, absmax symmetric for Q3_K and Q6_K."""
    bits, n, affine = {
        "Q2_K": (2, 16, True),
        "Q3_K": (3, 16, False),
        "Q4_K": (4, 32, True),
        "Q5_K": (5, 32, True),
        "Q6_K": (6, 16, False),
    }[name]
    b = x.reshape(-1, n).astype(np.float64)
    if affine:
        lo = b.min(axis=1, keepdims=True)
        step = (b.max(axis=1, keepdims=True) - lo) / (2**bits - 1)
        return (np.round((b - lo) / step) * step + lo).reshape(x.shape)
    step = np.abs(b).max(axis=1, keepdims=True) / (2 ** (bits - 1) - 1)
    return (np.round(b / step) * step).reshape(x.shape)


@pytest.mark.parametrize("name", K_TYPES)
def test_k_quants_round_trip_better_than_plain_rounding(name: str) -> None:
    x = np.random.default_rng(3).standard_normal((32, 1024)).astype(np.float32)
    encoded = quantize(x, name)
    ours = QUANT_TYPES_BY_NAME[name].dequantize(encoded.reshape(-1), x.shape)
    theirs = gguf.quants.dequantize(encoded, gguf.GGMLQuantizationType[name])
    np.testing.assert_array_equal(ours, theirs)

    def rmse(y: np.ndarray) -> float:
        return float(np.sqrt(np.mean((y - x) ** 2)))

    assert rmse(ours) < rmse(simple_reference(x, name))


@pytest.mark.parametrize("name", K_TYPES + LEGACY)
def test_zero_blocks_decode_to_zero_and_tensors_of_any_rank(name: str) -> None:
    x = np.zeros((2, 3, 512), dtype=np.float32)
    encoded = quantize(x, name)
    qtype = QUANT_TYPES_BY_NAME[name]
    assert encoded.shape == (2, 3, qtype.nbytes((512,)))
    assert not qtype.dequantize(encoded.reshape(-1), x.shape).any()


def test_bad_targets_are_named() -> None:
    with pytest.raises(ValueError, match=r"Q4_K: row length 100 is not a multiple of .* 256"):
        quantize(np.zeros((2, 100), np.float32), "Q4_K")
    with pytest.raises(UnsupportedTarget, match=r"'IQ4_XS'.*Q4_K"):
        quantize(np.zeros((1, 256), np.float32), "IQ4_XS")


# ----- the mix policy ---------------------------------------------------------------


def plan_cases() -> list[tuple[str, str]]:
    return [(model, mix) for model, rec in PLANS.items() for mix in rec["plans"]]


@pytest.mark.parametrize(("model", "mix"), plan_cases())
def test_plan_matches_llama_quantize(model: str, mix: str) -> None:
    rec = PLANS[model]
    specs = []
    for line in rec["tensors"]:
        name, shape, kind = line.split()
        specs.append(TensorSpec(name, tuple(int(n) for n in shape.split(",")), kind))
    hp = rec["hparams"]
    shape = ModelShape(
        rec["arch"],
        hp["block_count"],
        hp["attention.head_count"],
        hp.get("attention.head_count_kv", hp["attention.head_count"]),
        hp.get("expert_count", 0),
    )
    name, *flags = mix.split()
    ours = plan(specs, shape, name, pure="--pure" in flags)
    expected = dict(zip([s.name for s in specs], rec["plans"][mix].split(), strict=True))
    wrong = {n: (ours[n], expected[n]) for n in expected if ours[n] != expected[n]}
    assert not wrong, f"(ours, llama.cpp): {wrong}"


def test_mix_names_and_aliases() -> None:
    assert get_mix("q4_k_m").ftype == 15
    assert get_mix("Q4_K") == get_mix("Q4_K_M")
    assert get_mix("Q8_0").default == "Q8_0"
    with pytest.raises(UnknownMix, match=r"unknown quantization type 'Q7_K'.*Q4_K_M"):
        get_mix("Q7_K")


def test_plan_from_names_alone_keeps_vectors_and_falls_back() -> None:
    tensors = [
        ("token_embd.weight", (1000, 576)),
        ("blk.0.attn_norm.weight", (576,)),
        ("blk.0.ffn_down.weight", (576, 1536)),
        ("blk.0.attn_q.weight", (576, 576)),
        ("blk.0.ffn_gate_inp.weight", (8, 576)),
    ]
    assert plan(tensors, "llama", "Q4_K_M") == {
        "token_embd.weight": "Q8_0",  # tied output: Q6_K, but 576 is not a multiple of 256
        "blk.0.attn_norm.weight": "F32",
        "blk.0.ffn_down.weight": "Q6_K",  # use_more_bits layer, 1536 = 6 x 256
        "blk.0.attn_q.weight": "Q5_0",  # Q4_K falls back
        "blk.0.ffn_gate_inp.weight": "F32",  # MoE routers are never quantized
    }


# ----- whole files ------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("src") / "tiny.gguf"
    return write_tiny_llama(path, d_model=256, n_layers=4, n_heads=8, n_kv_heads=2, d_ff=512)


def test_quantize_gguf_writes_the_plan_and_keeps_metadata(tiny: Path, tmp_path: Path) -> None:
    dst = tmp_path / "q.gguf"
    result = quantize_gguf(tiny, dst, "Q4_K_M")
    with GGUFFile.open(tiny) as src, GGUFFile.open(dst) as out:
        specs = [(t.name, t.shape, t.qtype.name) for t in src.tensors.values()]
        assert result.types == plan(specs, ModelShape.from_metadata(src.metadata), "Q4_K_M")
        assert list(out.tensors) == list(src.tensors)
        assert {t.qtype.name for t in out.tensors.values()} >= {"Q4_K", "Q6_K", "F32"}
        for name, info in out.tensors.items():
            assert info.qtype.name == result.types[name]
            expected = quantize(src.load_tensor(name), info.qtype.name).reshape(-1)
            np.testing.assert_array_equal(out.tensor_bytes(name), expected, err_msg=name)
        assert out.metadata["general.file_type"] == 15
        assert out.metadata["general.quantization_version"] == 2
        for key in src.metadata:
            if key != "general.file_type":
                assert np.array_equal(out.metadata[key], src.metadata[key]), key
    assert result.n_bytes == dst.stat().st_size
    assert [p.name for p in tmp_path.iterdir()] == ["q.gguf"]


# The random tiny model amplifies weight errors (F16 alone moves its logits by 0.6%),
# so the bounds are loose; they still fail for a file that decodes to wrong weights.
# The quantized file's weights are used as float32: this checks the file, not the
# runtime's bfloat16 storage (tests/runtime/test_bf16.py).
@pytest.mark.parametrize(("mix", "tolerance"), [("Q8_0", 0.15), ("Q6_K", 0.3), ("Q4_K_M", 0.9)])
def test_quantized_file_runs_in_the_engine(
    tiny: Path, tmp_path: Path, mix: str, tolerance: float
) -> None:
    dst = tmp_path / f"{mix}.gguf"
    quantize_gguf(tiny, dst, mix)
    tokens = np.array([5, 70, 80, 90, 100, 3])
    exact, quant = Engine.load(tiny), Engine.load(dst, bf16=False)
    assert quant.info.quantization == mix
    want = exact.model.forward(tokens, exact.model.new_cache(16))
    got = quant.model.forward(tokens, quant.model.new_cache(16))
    assert np.sqrt(np.mean((got - want) ** 2)) < tolerance * np.std(want)
    if tolerance < 0.5:
        assert np.argmax(got) == np.argmax(want)


def test_progress_counts_every_value_and_slabs_change_nothing(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[QuantizeProgress] = []
    quantize_gguf(tiny, tmp_path / "a.gguf", "Q6_K", progress=events.append)
    monkeypatch.setattr(rewrite, "SLAB_VALUES", 1000)  # several slabs per tensor
    quantize_gguf(tiny, tmp_path / "b.gguf", "Q6_K")
    assert (tmp_path / "a.gguf").read_bytes() == (tmp_path / "b.gguf").read_bytes()
    done = [e.done for e in events]
    assert done == sorted(done) and done[-1] == events[-1].total
    with GGUFFile.open(tiny) as src:
        assert events[-1].total == sum(t.n_elements for t in src.tensors.values())
    assert events[-1].index == events[-1].n_tensors - 1


def test_peak_memory_is_a_slab_not_a_tensor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    src = tmp_path / "big.gguf"
    writer = gguf.GGUFWriter(str(src), "llama")
    writer.add_tensor("blk.0.ffn_up.weight", np.ones((2048, 1024), np.float32))  # 8 MiB
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    monkeypatch.setattr(rewrite, "SLAB_VALUES", 1 << 16)  # 256 KiB of float32
    tracemalloc.start()
    try:
        quantize_gguf(src, tmp_path / "q.gguf", "Q4_K_M")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20


def test_bad_mix_writes_nothing(tiny: Path, tmp_path: Path) -> None:
    with pytest.raises(UnknownMix, match="Q9_K"):
        quantize_gguf(tiny, tmp_path / "x.gguf", "Q9_K")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_smollm2_requantized_to_q4_k_m_still_answers(smollm2_path: Path, tmp_path: Path):
    dst = tmp_path / "smollm2.Q4_K_M.gguf"
    result = quantize_gguf(smollm2_path, dst, "Q4_K_M")
    rec = PLANS["smollm2-135m"]
    names = [line.split()[0] for line in rec["tensors"]]
    assert result.types == dict(zip(names, rec["plans"]["Q4_K_M"].split(), strict=True))
    engine = Engine.load(dst)
    ids = engine.tokenizer.encode("The capital of France is")
    logits = engine.model.forward(np.array(ids), engine.model.new_cache(32))
    assert "Paris" in engine.tokenizer.decode([int(np.argmax(logits))])
