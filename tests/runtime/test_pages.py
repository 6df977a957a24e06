"""Weights do not ask for transparent huge pages (runtime/pages.py): on the VMs
corral runs on, faulting them in made loading 2x slower for no faster decoding."""

from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np
import pytest

from corral.runtime.bf16 import Bf16Matrix
from corral.runtime.engine import Engine
from corral.runtime.pages import MAPPED_BYTES, NUMPY_HUGE_PAGE_BYTES, weight_array
from tiny import write_tiny_llama

SMAPS = Path("/proc/self/smaps")


def test_weight_array_is_a_writable_float32_array_of_the_shape() -> None:
    for shape in [(3, 5), (MAPPED_BYTES // 4 // 64, 64)]:
        a = weight_array(shape)
        assert a.shape == shape and a.dtype == np.float32 and a.flags.c_contiguous
        a[...] = 1.5
        assert float(a.sum()) == 1.5 * a.size


def in_a_mapping(array: np.ndarray) -> bool:
    """Whether `array` borrows its memory from an mmap."""
    while isinstance(array.base, np.ndarray):
        array = array.base
    base = array.base
    return isinstance(base.obj if isinstance(base, memoryview) else base, mmap.mmap)


def test_big_weights_get_a_mapping_of_their_own() -> None:
    assert in_a_mapping(weight_array((MAPPED_BYTES // 4 // 64, 64)))
    assert not in_a_mapping(weight_array((MAPPED_BYTES // 4 - 1,)))


def asks_for_huge_pages(array: np.ndarray) -> bool:
    """Whether a mapping of this process under `array` was madvised MADV_HUGEPAGE (the
    VmFlag `hg`)."""
    lo, hi = array.ctypes.data, array.ctypes.data + array.nbytes
    overlaps = False
    for line in SMAPS.read_text().splitlines():
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):  # a mapping's first line
            start, end = (int(x, 16) for x in head.split("-"))
            overlaps = start < hi and lo < end
        elif overlaps and head == "VmFlags:" and "hg" in line.split()[1:]:
            return True
    return False


@pytest.mark.skipif(not SMAPS.exists(), reason="needs Linux's /proc/self/smaps")
def test_a_loaded_models_big_matrices_do_not_ask_for_huge_pages(tmp_path: Path) -> None:
    # d_ff 2048: the fused gate/up matrix is 4 MiB, where np.empty would madvise
    path = write_tiny_llama(tmp_path / "t.gguf", d_model=256, d_ff=2048, weight_type="Q8_0")
    model = Engine.load(path, split=False).model
    arrays = [m.bits if isinstance(m, Bf16Matrix) else m for m in model.matrices()]
    big = [m for m in arrays if m.nbytes >= MAPPED_BYTES]
    assert big, "the test model needs a matrix of 4 MiB or more"
    for m in big:
        assert not asks_for_huge_pages(m)
    huge = np.empty(NUMPY_HUGE_PAGE_BYTES // 4, dtype=np.float32)
    assert asks_for_huge_pages(huge)  # NumPy's own
