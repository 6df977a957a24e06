"""corral's NumPy CPU runtime for GGUF models.

A library on its own: it knows nothing of HTTP, asyncio, YAML, manifests or
the daemon, and imports only numpy, gguf, jinja2, regex and the standard library.
"""

import os

# OpenBLAS's idle threads spin for 2**N CPU cycles before they sleep, 2**28 (~0.1 s)
# by default. A thread left spinning by a threaded product (a prompt's prefill) takes
# a core from the split helper (runtime/split.py), and the next few batched steps run
# 2-4x slower. 2**20 cycles (well under a millisecond) still spans the gaps between
# one token's matrix-vector products, so single-stream decoding keeps its spinning
# threads. OpenBLAS reads this once, when NumPy loads it: corral.runtime is imported
# before NumPy wherever corral starts (the daemon imports it first thing); an explicit
# setting wins.
BLAS_THREAD_TIMEOUT = "20"
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", BLAS_THREAD_TIMEOUT)
