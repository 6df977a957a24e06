"""How much memory a loaded model takes, and how much the daemon may use.

corral's runtime keeps a quantized file's weight matrices as bfloat16 and every other
weight as float32 (runtime/bf16.py), so a model's loaded size is 2 or 4 bytes per
weight, whatever its file's quantization, plus one KV cache per parallel slot: for
each layer, keys and values of `n_kv_heads * head_dim` float32 numbers per token of
the context. Both are read from the GGUF header alone; no weight is touched.

The budget (CORRAL_MAX_MEMORY) defaults to a safe fraction of the machine's
RAM, or of the cgroup's limit when the daemon runs in a container.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from corral.runtime.arch import architecture
from corral.runtime.bf16 import stores_bf16
from corral.runtime.gguf import GGUFError, GGUFFile, TensorInfo

FLOAT32_BYTES = 4
BF16_BYTES = 2
SAFE_FRACTION = 0.75  # of RAM: room for the OS, the user's other programs, prefill buffers
CGROUP_LIMIT = Path("/sys/fs/cgroup/memory.max")

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)")
# unit -> bytes: decimal (KB, K) and binary (KiB, Ki) forms, as `ollama` and `free` print them
_UNITS: dict[str, int] = {"": 1, "b": 1}
for _power, _letter in enumerate("kmgt", start=1):
    _UNITS |= {_letter: 1000**_power, f"{_letter}b": 1000**_power}
    _UNITS |= {f"{_letter}i": 1024**_power, f"{_letter}ib": 1024**_power}


Estimate = Callable[[Path, int, int], int]  # (path, num_ctx, num_parallel) -> bytes


def estimate_model_bytes(path: Path, num_ctx: int, num_parallel: int = 1) -> int:
    """Bytes the model at `path` takes once loaded with `num_parallel` sessions of `num_ctx`."""
    with GGUFFile.open(path) as gguf:
        arch = gguf.metadata.get("general.architecture")
        if not isinstance(arch, str):
            raise GGUFError(f"{path}: general.architecture is missing")
        config = architecture(arch).config_type.from_gguf(gguf, arch)
        weights = sum(t.n_elements * loaded_itemsize(t) for t in gguf.tensors.values())
    n_ctx = min(num_ctx, config.context_length)
    per_token = 2 * config.n_layers * config.n_kv_heads * config.head_dim * FLOAT32_BYTES
    return weights + num_parallel * n_ctx * per_token


def loaded_itemsize(tensor: TensorInfo) -> int:
    """Bytes per value of `tensor` once loaded: matrices of quantized types are kept as
    bfloat16, everything else as float32."""
    matrix = len(tensor.shape) == 2
    return BF16_BYTES if matrix and stores_bf16(tensor.qtype.name) else FLOAT32_BYTES


def fitting_slots(
    estimate: Estimate, path: Path, num_ctx: int, num_parallel: int, budget: int | None
) -> tuple[int, int]:
    """(bytes, slots): the most requests at once, up to `num_parallel`, whose KV caches
    with the weights fit `budget` (None: no budget), and the bytes that takes; slots is
    0, with the bytes of one, when not even one fits."""
    for slots in range(num_parallel, 0, -1):
        size = estimate(path, num_ctx, slots)
        if budget is None or size <= budget:
            return size, slots
    return size, 0


def physical_memory() -> int:
    """The RAM this process may use: the machine's, or its cgroup's limit if lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = CGROUP_LIMIT.read_text().strip()
    except OSError:
        return total
    return min(total, int(limit)) if limit.isdigit() else total


def default_budget() -> int:
    return int(physical_memory() * SAFE_FRACTION)


def parse_size(text: str) -> int:
    """Bytes from "16GB", "512MiB", "8g", "1000000" or "60%" (of RAM)."""
    value = text.strip()
    if value.endswith("%"):
        percent = float(value[:-1])
        if not 0 < percent <= 100:
            raise ValueError("a percentage of RAM must be above 0 and at most 100")
        return int(physical_memory() * percent / 100)
    match = _SIZE.fullmatch(value.lower())
    if match is None or match.group(2) not in _UNITS:
        raise ValueError("use a size like 16GB, 512MiB or 60% (of RAM)")
    size = int(float(match.group(1)) * _UNITS[match.group(2)])
    if size <= 0:
        raise ValueError("must be more than 0 bytes")
    return size


def human_size(n: int) -> str:
    """1.5 GB, 300 MB: for messages (decimal units, as Ollama prints sizes)."""
    for unit, scale in (("TB", 1000**4), ("GB", 1000**3), ("MB", 1000**2), ("KB", 1000)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"
