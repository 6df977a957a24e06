"""Where the runtime's big arrays get their memory: anonymous mappings of their own.

A mapping's pages are zero and committed only when first written, it can be advised
on its own (KV caches: MADV_DONTFORK, kv_cache.kv_array), and it asks for no
transparent huge pages, where NumPy madvises them for every array of 4 MiB or more.

Weights go into such mappings for the last reason. On the virtual machines corral is
measured on, a huge-page fault can cost milliseconds (the host backs each 2 MiB page
anew once the guest has handed its free pages back): measured alternately,
gemma-3-270m loaded in 2.6-3.3 s on huge pages against 1.2-1.6 s on 4 KiB pages,
while the products of a token over its weights ran alike (51-56 ms either way; a
stream's reads are sequential, so TLB misses hide behind them). The system's policy
still decides: with THP `always` they get huge pages.

Weight mappings are also MADV_DONTFORK, as KV caches are: a helper forked for one model
(runtime/split.py) would otherwise keep every other model loaded at that moment, whose
pages then stay in memory after that model is unloaded, until the helper ends. The
helper's own model lends it its weights for the fork (`inherited`).
"""

from __future__ import annotations

import contextlib
import math
import mmap
from collections.abc import Iterator, Sequence

import numpy as np

NUMPY_HUGE_PAGE_BYTES = 4 << 20  # NumPy asks for huge pages from this size on
# weights from this size on get a mapping of their own (glibc's own threshold for one);
# smaller ones (norms, biases: a few KiB) come from np.empty
MAPPED_BYTES = 128 << 10


def mapped_array(
    shape: tuple[int, ...], *advice: int, dtype: np.dtype | type = np.float32
) -> np.ndarray:
    """A zeroed array of `shape` (float32 unless `dtype`) in an anonymous private mapping
    of its own, madvised with each of `advice`."""
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    memory = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for option in advice:
        memory.madvise(option)
    return np.frombuffer(memory, dtype=dtype).reshape(shape)


def weight_array(shape: tuple[int, ...], dtype: np.dtype | type = np.float32) -> np.ndarray:
    """A writable array of `shape` for weights (uninitialised when small); a big one is
    not inherited by forked children (see `inherited`)."""
    if math.prod(shape) * np.dtype(dtype).itemsize < MAPPED_BYTES or not hasattr(
        mmap, "MAP_PRIVATE"
    ):
        return np.empty(shape, dtype=dtype)
    return mapped_array(shape, *_DONTFORK, dtype=dtype)


_DONTFORK = (mmap.MADV_DONTFORK,) if hasattr(mmap, "MADV_DONTFORK") else ()


def mapping_of(array: np.ndarray) -> mmap.mmap | None:
    """The mmap `array` borrows its memory from (through any views), or None."""
    while isinstance(array.base, np.ndarray):
        array = array.base
    base = array.base
    base = base.obj if isinstance(base, memoryview) else base
    return base if isinstance(base, mmap.mmap) else None


@contextlib.contextmanager
def inherited(arrays: Sequence[np.ndarray]) -> Iterator[None]:
    """Let a fork() made meanwhile inherit the mappings of `arrays` (weights are
    MADV_DONTFORK otherwise); the caller keeps other forks away meanwhile."""
    mappings = list({id(m): m for a in arrays if (m := mapping_of(a)) is not None}.values())
    if not _DONTFORK:
        yield
        return
    for mapping in mappings:
        mapping.madvise(mmap.MADV_DOFORK)
    try:
        yield
    finally:
        for mapping in mappings:
            mapping.madvise(mmap.MADV_DONTFORK)
