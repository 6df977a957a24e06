"""runtime/bf16.py: bfloat16 weight matrices, their rounding and their products."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from corral.runtime.arch.ops import linear
from corral.runtime.bf16 import MATVEC_ROWS, Bf16Matrix, stores_bf16, widen
from corral.runtime.engine import Engine
from tiny import write_tiny_llama


def reference_bf16(values: np.ndarray) -> np.ndarray:
    """Round float32 to bfloat16 bits in float64 arithmetic, ties to even, from the
    definition: the nearest value with 8 significant bits."""
    out = np.empty(values.shape, dtype=np.uint16)
    for i, v in enumerate(values.reshape(-1).astype(np.float64)):
        if v == 0:
            out.reshape(-1)[i] = np.array(v, np.float32).view(np.uint32) >> 16
            continue
        exponent = np.floor(np.log2(abs(v)))
        step = 2.0 ** (exponent - 7)  # spacing of bfloat16 values near v
        q = v / step
        nearest = np.round(q)  # numpy rounds halves to even
        out.reshape(-1)[i] = np.array(nearest * step, np.float32).view(np.uint32) >> 16
    return out


def test_rounding_is_to_nearest_ties_to_even() -> None:
    rng = np.random.default_rng(0)
    values = (rng.standard_normal(2000) * 10.0 ** rng.integers(-6, 6, 2000)).astype(np.float32)
    # exact halfway cases: a float32 whose low 16 bits are 0x8000
    halves = (rng.integers(0x3F00, 0x4100, 64).astype(np.uint32) << 16 | 0x8000).view(np.float32)
    values = np.concatenate([values, halves, np.float32([0.0, -0.0, 1.0, -2.5])])
    got = Bf16Matrix.from_float32(values.reshape(1, -1)).bits.reshape(-1)
    np.testing.assert_array_equal(got, reference_bf16(values))


def test_widening_is_exact_and_rounding_keeps_nan_and_infinity() -> None:
    special = np.float32([np.inf, -np.inf, np.nan, 3.0e38, -1e-40])
    matrix = Bf16Matrix.from_float32(special.reshape(1, -1))
    back = matrix.float32()[0]
    assert back[0] == np.inf and back[1] == -np.inf and np.isnan(back[2])
    assert np.isfinite(back[3]) or back[3] == np.inf  # the largest values may round up
    bits = np.arange(0, 1 << 16, dtype=np.uint16)
    assert np.array_equal(widen(bits).view(np.uint32) >> 16, bits)


@pytest.mark.parametrize(("n", "k"), [(1, 1), (7, 5), (33, 64), (301, 576), (4099, 130)])
def test_products_match_float64_for_every_batch_size(n: int, k: int) -> None:
    rng = np.random.default_rng(n * k)
    matrix = Bf16Matrix.from_float32(rng.standard_normal((n, k), dtype=np.float32))
    exact = matrix.float32().astype(np.float64)
    for rows in [*range(1, MATVEC_ROWS + 2), 40]:  # kernels, padded kernels, then BLAS
        x = rng.standard_normal((rows, k), dtype=np.float32)
        got = linear(x, matrix)
        assert got.shape == (rows, n) and got.dtype == np.float32
        want = x.astype(np.float64) @ exact.T
        scale = np.abs(x).max() * np.abs(exact).max() * np.sqrt(k)
        np.testing.assert_allclose(got, want, atol=1e-5 * scale, err_msg=f"{rows} rows")


def test_non_contiguous_input_rows() -> None:
    rng = np.random.default_rng(3)
    matrix = Bf16Matrix.from_float32(rng.standard_normal((50, 32), dtype=np.float32))
    x = rng.standard_normal((3, 64), dtype=np.float32)[:, ::2]  # strided
    np.testing.assert_allclose(linear(x, matrix), x @ matrix.float32().T, rtol=1e-5, atol=1e-5)


def test_embedding_rows() -> None:
    values = np.arange(12, dtype=np.float32).reshape(4, 3)  # small integers: exact in bf16
    matrix = Bf16Matrix.from_float32(values)
    np.testing.assert_array_equal(matrix[np.array([3, 0, 3])], values[[3, 0, 3]])


def test_which_tensor_types_become_bfloat16() -> None:
    assert all(stores_bf16(t) for t in ("Q4_0", "Q4_1", "Q8_0", "Q4_K", "Q6_K", "BF16"))
    assert not any(stores_bf16(t) for t in ("F32", "F16"))


@pytest.mark.parametrize(("weight_type", "bf16"), [("Q8_0", True), ("F16", False)])
def test_a_quantized_model_keeps_bfloat16_matrices(
    tmp_path: Path, weight_type: str, bf16: bool
) -> None:
    path = write_tiny_llama(tmp_path / "t.gguf", weight_type=weight_type)
    model = Engine.load(path, split=False).model
    kinds = {isinstance(m, Bf16Matrix) for m in model.matrices()}
    assert kinds == {bf16}
    exact = Engine.load(path, split=False, bf16=False).model
    assert not any(isinstance(m, Bf16Matrix) for m in exact.matrices())
    tokens = np.array([5, 70, 80, 90])
    got = model.forward(tokens, model.new_cache(8))
    want = exact.forward(tokens, exact.new_cache(8))
    np.testing.assert_allclose(got, want, atol=0.05 * np.std(want) if bf16 else 0)
