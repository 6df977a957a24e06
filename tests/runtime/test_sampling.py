from __future__ import annotations

import numpy as np

from corral.runtime.sampling import Sampler, SamplerOptions, top_k_ids


def logits_with(best: int, size: int = 100) -> np.ndarray:
    x = np.linspace(-2, 2, size).astype(np.float32)
    x[best] = 10.0
    return x


def test_greedy_picks_argmax() -> None:
    assert Sampler(SamplerOptions.greedy()).sample(logits_with(42)) == 42


def test_repeat_penalty_changes_greedy_choice() -> None:
    logits = np.zeros(10, dtype=np.float32)
    logits[3], logits[4] = 2.0, 1.9
    opts = SamplerOptions(temperature=0.0, repeat_penalty=1.5)
    assert Sampler(opts).sample(logits, history=[3]) == 4
    assert Sampler(opts).sample(logits, history=[7]) == 3
    # negative logits are multiplied, pushing them further down
    neg = -np.ones(3, dtype=np.float32)
    neg[1] = -0.9
    assert Sampler(opts).sample(neg, history=[1]) in (0, 2)


def test_seed_makes_sampling_reproducible() -> None:
    logits = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    opts = SamplerOptions(temperature=1.0, top_k=0, top_p=1.0, seed=7)
    a = [Sampler(opts).sample(logits) for _ in range(5)]
    s = Sampler(opts)
    b = [s.sample(logits) for _ in range(50)]
    assert len(set(a)) == 1  # same seed, same first draw
    assert len(set(b)) > 5  # one sampler's RNG advances


def test_top_k_restricts_candidates() -> None:
    logits = np.arange(100, dtype=np.float32) / 10
    s = Sampler(SamplerOptions(temperature=5.0, top_k=3, top_p=1.0, seed=1))
    assert {s.sample(logits) for _ in range(200)} == {97, 98, 99}


def test_top_p_and_min_p_restrict_candidates() -> None:
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05], dtype=np.float32))
    s = Sampler(SamplerOptions(temperature=1.0, top_k=0, top_p=0.75, seed=2))
    assert {s.sample(logits) for _ in range(300)} == {0, 1}
    s = Sampler(SamplerOptions(temperature=1.0, top_k=0, top_p=1.0, min_p=0.25, seed=3))
    assert {s.sample(logits) for _ in range(300)} == {0, 1, 2}


def test_temperature_sharpens() -> None:
    logits = np.array([1.0, 0.5, 0.0], dtype=np.float32)
    cold = Sampler(SamplerOptions(temperature=0.05, top_k=0, top_p=1.0, seed=4))
    assert {cold.sample(logits) for _ in range(100)} == {0}


def test_top_k_ids_are_the_k_largest() -> None:
    rng = np.random.default_rng(3)
    cases = [rng.standard_normal(v).astype(np.float32) * 4 for v in (262_144, 49_155, 300)]
    spiky = np.full(70_000, -np.inf, dtype=np.float32)  # fewer finite logits than k
    spiky[rng.choice(70_000, 5, replace=False)] = [1, 2, 3, 4, 5]
    sorted_up = np.arange(100_000, dtype=np.float32)  # the top k in one column of (64, V/64)
    for logits in [*cases, spiky, sorted_up]:
        for k in (1, 40, 200):
            expected = np.sort(np.partition(logits, -k)[-k:])
            assert np.array_equal(np.sort(logits[top_k_ids(logits, k)]), expected)
            assert len(set(top_k_ids(logits, k).tolist())) == k
