import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from corral.registry.errors import CorruptModel, InvalidName, ModelNotFound
from corral.registry.manifest import Manifest
from corral.registry.names import ModelName
from corral.registry.progress import PullProgress
from corral.registry.pull import pull
from corral.registry.store import Store


def _install(store: Store, gguf: Path, name: str) -> None:
    model = pull(store, str(gguf))
    store.copy(model.name, name)
    if model.name != str(ModelName.parse(name)):
        store.delete(model.name)


def test_resolve_list_copy_delete(
    store: Store, make_gguf: Callable[..., Path], tmp_path: Path, store_files: Callable
) -> None:
    a = make_gguf(tmp_path / "a.gguf", seed=1)
    b = make_gguf(tmp_path / "b.gguf", seed=2)
    _install(store, a, "first:v1")
    _install(store, b, "Second")
    first = store.resolve("FIRST:V1")
    assert first.name == "first:v1"
    assert first.model_path.read_bytes() == a.read_bytes()
    assert first.size == a.stat().st_size
    assert first.digest == first.manifest.model
    assert first.manifest.name == "first:v1"
    names = [m.name for m in store.list()]
    assert sorted(names) == ["first:v1", "second:latest"]

    copy = store.copy("first:v1", "me/alias:x")
    assert copy.digest == first.digest and copy.manifest.name == "me/alias:x"
    store.delete("first:v1")  # the blob is still referenced by the copy
    assert store.resolve("me/alias:x").model_path.is_file()
    store.delete("me/alias:x")
    store.delete("second")
    assert store.list() == []
    assert store_files(store) == []
    assert list((store.home / "manifests").iterdir()) == []  # empty folders pruned


def test_list_is_newest_first(store: Store, make_gguf: Callable[..., Path], tmp_path: Path) -> None:
    for i, name in enumerate(["old", "mid", "new"]):
        _install(store, make_gguf(tmp_path / f"{name}.gguf", seed=i), name)
        path = ModelName.parse(name).manifest_path(store.home)
        os.utime(path, (1_000_000 + i, 1_000_000 + i))
    assert [m.name for m in store.list()] == ["new:latest", "mid:latest", "old:latest"]


def test_errors(store: Store) -> None:
    with pytest.raises(ModelNotFound, match=r"model 'nope' not found, try `corral pull nope`"):
        store.resolve("nope")
    with pytest.raises(InvalidName):
        store.resolve("../x")
    with pytest.raises(ModelNotFound):
        store.delete("nope")
    with pytest.raises(ModelNotFound):
        store.copy("nope", "other")


def test_corrupt_manifest_is_reported_and_its_blobs_kept(
    store: Store, tiny_gguf: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = pull(store, str(tiny_gguf))
    path = ModelName.parse(model.name).manifest_path(store.home)
    path.write_text(path.read_text().replace("schema_version: 1", "schema_version: [", 1))
    with pytest.raises(CorruptModel, match=str(path)):
        store.resolve(model.name)
    assert store.list() == []
    assert "skipping" in caplog.text
    store.gc()
    assert model.model_path.is_file()  # still mentioned by the unreadable manifest


def test_missing_blob_is_a_clear_error(store: Store, tiny_gguf: Path) -> None:
    model = pull(store, str(tiny_gguf))
    model.model_path.unlink()
    with pytest.raises(CorruptModel, match=r"is missing; pull or create tiny:latest again"):
        store.resolve(model.name)


def test_commit_refuses_a_manifest_without_its_blob(store: Store) -> None:
    manifest = Manifest(name="x", model="sha256:" + "0" * 64)
    with pytest.raises(CorruptModel, match="is missing"):
        store.commit(ModelName.parse("x"), manifest)
    assert not ModelName.parse("x").manifest_path(store.home).exists()


def _recipe(store: Store, gguf: Path) -> None:
    folder = store.home / "Modelfiles"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mine-latest.yaml").write_text(f"name: mine\nsources: ['{gguf}']\n")


def test_broken_install_is_pulled_again(store: Store, tiny_gguf: Path) -> None:
    _recipe(store, tiny_gguf)
    model = pull(store, "mine")
    path = ModelName.parse("mine").manifest_path(store.home)
    path.write_text("garbage: [")
    again = pull(store, "mine")
    assert again.digest == model.digest
    assert store.resolve("mine").manifest.source["path"] == str(tiny_gguf)


def test_pulling_a_recipe_again_restores_it_and_is_otherwise_a_no_op(
    store: Store, tiny_gguf: Path, make_gguf: Callable[..., Path], tmp_path: Path
) -> None:
    _recipe(store, tiny_gguf)
    model = pull(store, "mine")
    manifest = ModelName.parse("mine").manifest_path(store.home)
    written = manifest.stat().st_mtime_ns
    assert pull(store, "mine").digest == model.digest
    assert manifest.stat().st_mtime_ns == written  # up to date: nothing fetched or written
    other = pull(store, str(make_gguf(tmp_path / "other.gguf", seed=9)))
    store.copy(str(other.name), "mine")  # another model copied over the recipe's name
    assert store.resolve("mine").digest == other.digest
    assert pull(store, "mine").digest == model.digest  # pulled again, as Ollama would


def test_a_recipe_whose_sources_changed_is_pulled_again(
    store: Store, tiny_gguf: Path, make_gguf: Callable[..., Path], tmp_path: Path
) -> None:
    _recipe(store, tiny_gguf)
    before = pull(store, "mine")
    _recipe(store, make_gguf(tmp_path / "newer.gguf", seed=9))  # the recipe now names another
    after = pull(store, "mine")
    assert after.digest != before.digest
    assert pull(store, "mine").digest == after.digest


def test_identical_pulls_at_once_share_the_first_ones_work(
    store: Store, tiny_gguf: Path, store_files: Callable
) -> None:
    """Three pulls of one file: the first copies it while the others wait for it, then
    all three have the same model, and only one copy was made."""
    events: dict[int, list[str]] = {0: [], 1: [], 2: []}
    both_waiting = threading.Barrier(3, timeout=30)  # the first pull and the two waiters

    def progress(i: int) -> Callable[[PullProgress], None]:
        def record(p: PullProgress) -> None:
            events[i].append(p.status)
            if p.status.startswith("waiting for another pull") or (
                i == 0 and p.status == "pulling manifest"
            ):
                both_waiting.wait()  # the first holds its pull until both others wait

        return record

    results: dict[int, str] = {}

    def work(i: int) -> None:
        results[i] = pull(store, str(tiny_gguf), progress(i)).digest

    first = threading.Thread(target=work, args=(0,))
    first.start()
    while "pulling manifest" not in events[0]:
        time.sleep(0.01)
    others = [threading.Thread(target=work, args=(i,)) for i in (1, 2)]
    for t in others:
        t.start()
    for t in [first, *others]:
        t.join(timeout=60)
    assert len(set(results.values())) == 1 and len(results) == 3
    for i in (1, 2):
        assert events[i] == ["waiting for another pull of tiny:latest", "success"]
    assert not [f for f in store_files(store) if "tmp-" in f or "partial-" in f]


def test_concurrent_pulls_and_deletes_keep_the_store_consistent(
    store: Store, make_gguf: Callable[..., Path], tmp_path: Path, store_files: Callable
) -> None:
    ggufs = [make_gguf(tmp_path / f"m{i}.gguf", seed=i) for i in range(4)]
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(3):
                model = pull(store, str(ggufs[i % 2]))  # two threads per file
                store.copy(model.name, f"copy{i}")
                store.delete(f"copy{i}")
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    installed = store.list()
    assert sorted(m.name for m in installed) == ["m0:latest", "m1:latest"]
    for m in installed:
        assert m.model_path.read_bytes() == (tmp_path / f"{m.name.split(':')[0]}.gguf").read_bytes()
    blobs = [f for f in store_files(store) if f.startswith("blobs/")]
    assert sorted(blobs) == sorted(f"blobs/{m.model_path.name}" for m in installed)
