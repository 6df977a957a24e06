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
"""

from __future__ import annotations

import math
import mmap

import numpy as np

MAPPED_BYTES = 4 << 20  # NumPy asks for huge pages from this size on; below it, np.empty


def mapped_array(shape: tuple[int, ...], *advice: int) -> np.ndarray:
    """A zeroed float32 array of `shape` in an anonymous private mapping of its own,
    madvised with each of `advice`."""
    memory = mmap.mmap(-1, math.prod(shape) * 4, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for option in advice:
        memory.madvise(option)
    return np.frombuffer(memory, dtype=np.float32).reshape(shape)


def weight_array(shape: tuple[int, ...]) -> np.ndarray:
    """A writable float32 array of `shape` for weights (uninitialised when small)."""
    if math.prod(shape) * 4 < MAPPED_BYTES or not hasattr(mmap, "MAP_PRIVATE"):
        return np.empty(shape, dtype=np.float32)
    return mapped_array(shape)
