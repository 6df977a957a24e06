"""safetensors -> GGUF conversion: the reader, the per-architecture tables and transforms,
and round trips through checkpoints derived from tiny GGUFs of every architecture."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest

from corral.registry.convert import ARCHITECTURES, Checkpoint, convert_checkpoint
from corral.registry.convert.architectures import GEMMA3, LLAMA, extra_tensors
from corral.registry.convert.safetensors import SafetensorsFile
from corral.registry.convert.transforms import TRANSFORMS, Shapes, permute, round_to
from corral.registry.errors import CorruptModel, SourceError
from corral.runtime.arch import architecture
from corral.runtime.gguf import GGUFFile
from hf_checkpoint import derive_checkpoint, unpermute, write_safetensors
from tiny_archs import TinyShape, write_tiny_arch

LINEAR_ROPE: dict[str, float | str] = {"rope.scaling.type": "linear", "rope.scaling.factor": 8.0}
TINY = {
    "llama": TinyShape(),
    "qwen2": TinyShape(),
    "qwen3": TinyShape(head_dim=32),
    "gemma3": TinyShape(n_layers=7, head_dim=32, sliding_window=5, extra_metadata=LINEAR_ROPE),
}


def test_safetensors_reader_reads_every_float_dtype(tmp_path: Path) -> None:
    values = np.linspace(-3, 3, 24, dtype=np.float32).reshape(4, 6) + np.float32(1 / 3)
    for dtype in ("F32", "F16", "BF16"):
        path = tmp_path / f"{dtype}.safetensors"
        write_safetensors(
            path, [("w", (4, 6)), ("b", (6,))], lambda n: values[0] if n == "b" else values, dtype
        )
        with SafetensorsFile.open(path) as f:
            assert f.tensors["w"].dtype == dtype and f.tensors["w"].shape == (4, 6)
            assert f.metadata == {"format": "pt"}
            expected = round_to(values, dtype)
            np.testing.assert_array_equal(f.to_float32("w"), expected)
            np.testing.assert_array_equal(f.to_float32("b"), expected[0])
    assert round_to(np.float32([1 + 2**-8 + 2**-12]), "BF16")[0] == np.float32(1 + 2**-7)


def test_safetensors_reader_refuses_broken_files(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    write_safetensors(path, [("w", (64, 64))], lambda n: np.ones((64, 64), np.float32), "F32")
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    with pytest.raises(CorruptModel, match=r"w\.safetensors is truncated: tensor w ends at byte"):
        SafetensorsFile.open(path)
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(CorruptModel, match="header is not valid JSON"):
        SafetensorsFile.open(path)
    path.write_bytes(b"\xff" * 8)
    with pytest.raises(CorruptModel, match="is not a safetensors file"):
        SafetensorsFile.open(path)


def test_permutation_interleaves_the_halves_of_each_head() -> None:
    # 2 heads of dimension 4: HF rotates (x0, x1) with (y0, y1); llama.cpp pairs neighbours.
    rows = np.array(["x0", "x1", "y0", "y1", "X0", "X1", "Y0", "Y1"])
    assert list(permute(rows, 2)) == ["x0", "y0", "x1", "y1", "X0", "Y0", "X1", "Y1"]
    w = np.arange(8 * 3).reshape(8, 3)
    np.testing.assert_array_equal(unpermute(permute(w, 2), 2), w)


def test_tables_agree_with_gguf_py_tensor_name_map() -> None:
    """An independent source for the names: gguf-py's own HF->GGUF map."""
    for arch in {id(a): a for a in ARCHITECTURES.values()}.values():
        names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.gguf_arch.upper()], 4)
        for hf, ours in arch.tensors.items():
            hf_name, ours = hf.format(bid=3), ours.format(bid=3)
            stem, _, suffix = hf_name.rpartition(".")
            assert names.get_name(stem) + "." + suffix == ours, (arch.gguf_arch, hf_name)


@pytest.mark.parametrize("arch", sorted(TINY))
def test_round_trip_gives_back_the_gguf(arch: str, tmp_path: Path) -> None:
    """GGUF -> HF checkpoint (tests' own inverse) -> corral's conversion -> the same tensors,
    metadata and logits."""
    original = write_tiny_arch(tmp_path / "orig.gguf", arch, TINY[arch])
    folder = derive_checkpoint(original, tmp_path / "ckpt", dtype="F32")
    result = convert_checkpoint(
        Checkpoint.from_folder(folder), tmp_path / "conv.gguf", outtype="F32"
    )
    assert (result.architecture, result.file_type, result.source_dtype) == (arch, "F32", "F32")
    with GGUFFile.open(original) as a, GGUFFile.open(result.path) as b:
        assert set(a.tensors) == set(b.tensors)
        for name in a.tensors:
            np.testing.assert_array_equal(a.load_tensor(name), b.load_tensor(name), err_msg=name)
        for key in a.metadata:
            if key != "tokenizer.ggml.pre" and key.startswith((f"{arch}.", "tokenizer.")):
                assert np.array_equal(a.metadata[key], b.metadata[key]), key
        assert b.metadata["tokenizer.ggml.pre"] == "gpt-2"
        model_a = architecture(arch).from_gguf(a)
        model_b = architecture(arch).from_gguf(b)
    ids = np.array([5, 80, 200, 33, 7, 260])
    logits_a = model_a.logits(model_a.hidden(ids, model_a.new_cache(8)))
    logits_b = model_b.logits(model_b.hidden(ids, model_b.new_cache(8)))
    np.testing.assert_array_equal(logits_a, logits_b)


def test_default_output_types_follow_llama_cpp(tmp_path: Path) -> None:
    original = write_tiny_arch(tmp_path / "orig.gguf", "gemma3", TINY["gemma3"])
    folder = derive_checkpoint(original, tmp_path / "ckpt", dtype="BF16")
    result = convert_checkpoint(Checkpoint.from_folder(folder), tmp_path / "conv.gguf")
    assert result.file_type == "BF16"
    with GGUFFile.open(result.path) as g, GGUFFile.open(original) as o:
        types = {n: t.qtype.name for n, t in g.tensors.items()}
        assert types["blk.0.attn_q.weight"] == types["token_embd.weight"] == "BF16"
        assert types["blk.0.attn_q_norm.weight"] == types["output_norm.weight"] == "F32"
        assert g.metadata["general.file_type"] == 32
        # Gemma norms: (w - 1) stored in bf16, + 1 rounded to bf16 again (as torch does)
        norm = o.load_tensor("blk.0.post_ffw_norm.weight")
        expected = round_to(round_to(norm - np.float32(1.0), "BF16") + np.float32(1.0), "BF16")
        np.testing.assert_array_equal(g.load_tensor("blk.0.post_ffw_norm.weight"), expected)
    folder16 = derive_checkpoint(original, tmp_path / "ckpt16", dtype="F32")
    f16 = convert_checkpoint(Checkpoint.from_folder(folder16), tmp_path / "c16.gguf")
    assert f16.file_type == "F16"


def test_gemma3_embedding_keeps_the_tokenizer_rows() -> None:
    apply, shape_of, _ = TRANSFORMS["vocab_rows"]
    shapes = Shapes(n_head=1, n_head_kv=1, n_vocab=3)
    rows, _ = apply(np.arange(10).reshape(5, 2), "F32", shapes)
    assert rows.shape == shape_of((5, 2), shapes) == (3, 2)
    assert GEMMA3.transform_of("token_embd.weight") == "vocab_rows"
    assert GEMMA3.transform_of("blk.12.attn_k_norm.weight") == "plus_one"
    assert LLAMA.transform_of("blk.3.attn_k.bias") == "permute_k"


def test_llama3_rope_frequency_factors() -> None:
    config = {"hidden_size": 2048, "num_attention_heads": 32, "rope_theta": 500000.0}
    config["rope_scaling"] = {
        "rope_type": "llama3",
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    factors = extra_tensors(LLAMA, config)["rope_freqs.weight"]
    assert factors.shape == (32,) and factors.dtype == np.float32
    assert factors[0] == 1.0 and factors[-1] == 32.0  # fast rotations kept, slow ones scaled
    assert np.all(np.diff(factors) >= 0)
    assert extra_tensors(LLAMA, {"hidden_size": 64, "num_attention_heads": 4}) == {}


def test_unknown_tensor_and_unsupported_architecture(tmp_path: Path) -> None:
    original = write_tiny_arch(tmp_path / "orig.gguf", "llama")
    folder = derive_checkpoint(original, tmp_path / "ckpt", dtype="F32")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(
        json.dumps(config | {"architectures": ["MambaForCausalLM"]})
    )
    with pytest.raises(SourceError, match="architecture MambaForCausalLM is not supported"):
        convert_checkpoint(Checkpoint.from_folder(folder), tmp_path / "x.gguf")
    (folder / "config.json").write_text(json.dumps(config))
    write_safetensors(
        folder / "model.safetensors",
        [("model.layers.0.block_sparse_moe.gate.weight", (4, 4))],
        lambda n: np.zeros((4, 4), np.float32),
        "F32",
    )
    with pytest.raises(SourceError, match=r"block_sparse_moe\.gate\.weight has no GGUF name"):
        convert_checkpoint(Checkpoint.from_folder(folder), tmp_path / "x.gguf")
