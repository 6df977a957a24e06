"""Where a model's float32 weights live: on the pages the system gives by default,
not on the transparent huge pages NumPy asks for.

NumPy madvises huge pages for every array of 4 MiB or more. On the virtual machines
corral is measured on, a huge-page fault can cost milliseconds (the host backs each
2 MiB page anew once the guest has handed its free pages back): measured alternately,
gemma-3-270m loaded in 2.6-3.3 s on huge pages against 1.2-1.6 s on 4 KiB pages,
while the products of a token over its weights ran alike (51-56 ms either way; a
stream's reads are sequential, so TLB misses hide behind them). So weights go into
anonymous mappings that ask for nothing, and the system's policy decides (with THP
`always` they still get huge pages).
"""

from __future__ import annotations

import math
import mmap

import numpy as np

MAPPED_BYTES = 4 << 20  # NumPy asks for huge pages from this size on; below it, np.empty


def weight_array(shape: tuple[int, ...]) -> np.ndarray:
    """An uninitialised, writable float32 array of `shape` for weights."""
    nbytes = math.prod(shape) * 4
    if nbytes < MAPPED_BYTES or not hasattr(mmap, "MAP_PRIVATE"):
        return np.empty(shape, dtype=np.float32)
    memory = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return np.frombuffer(memory, dtype=np.float32).reshape(shape)
