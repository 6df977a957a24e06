"""The hand-split small-batch products give BLAS's answers, from any thread."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from corral.runtime.arch import ops, split

pytestmark = pytest.mark.skipif(not split.split_available(), reason="needs OpenBLAS, 2 cores")


@pytest.mark.parametrize("rows", [2, 3, 8])
@pytest.mark.parametrize("shape", [(7, 5), (1000, 96), (2048, 300)])
def test_split_linear_matches_blas(rows: int, shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(rows)
    weight = rng.standard_normal(shape, dtype=np.float32)  # (out, in)
    x = rng.standard_normal((rows, shape[1]), dtype=np.float32)  # (N, in)
    got = split.split_linear(x, weight)
    assert got.shape == (rows, shape[0]) and got.dtype == np.float32
    np.testing.assert_allclose(got, x @ weight.T, rtol=1e-4, atol=1e-4)


def test_linear_routes_small_batches_through_the_split(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = ops.split_linear
    monkeypatch.setattr(ops, "split_linear", lambda x, w: calls.append(x.shape[0]) or real(x, w))
    weight = np.ones((16, 4), dtype=np.float32)
    for rows in (1, 4, 9):
        ops.linear(np.ones((rows, 4), dtype=np.float32), weight)
    assert calls == [4]  # one row is a matrix-vector product; many rows a plain GEMM


def test_concurrent_callers_each_get_their_own_workers() -> None:
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((512, 64), dtype=np.float32)
    inputs = [rng.standard_normal((4, 64), dtype=np.float32) for _ in range(4)]
    results: dict[int, np.ndarray] = {}

    def run(i: int) -> None:
        for _ in range(50):
            results[i] = split.split_linear(inputs[i], weight)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, x in enumerate(inputs):
        np.testing.assert_allclose(results[i], x @ weight.T, rtol=1e-4, atol=1e-4)


def test_a_failing_half_raises_in_the_caller_and_the_workers_recover() -> None:
    weight = np.ones((64, 8), dtype=np.float32)
    with pytest.raises(ValueError):
        split.split_linear(np.ones((4, 9), dtype=np.float32), weight)  # wrong width
    x = np.ones((4, 8), dtype=np.float32)
    np.testing.assert_array_equal(split.split_linear(x, weight), np.full((4, 64), 8.0))
