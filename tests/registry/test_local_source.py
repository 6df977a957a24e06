import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from corral.registry.errors import CorruptModel, InvalidName, PullCancelled, SourceError
from corral.registry.pull import pull, pull_target
from corral.registry.store import Store


def test_pull_local_gguf(store: Store, tiny_gguf: Path) -> None:
    events = []
    model = pull(store, str(tiny_gguf), events.append)
    assert model.name == "tiny:latest"
    assert model.model_path.read_bytes() == tiny_gguf.read_bytes()
    m = model.manifest
    assert (m.format, m.architecture, m.quantization, m.context_length) == (
        "gguf",
        "llama",
        "Q8_0",
        256,
    )
    assert m.parameter_count == 16 * 32 + 64 * 32
    assert m.license == "mit"
    assert m.template is None  # the GGUF's own chat template is used
    assert m.source["kind"] == "local" and m.source["path"] == str(tiny_gguf)
    assert m.source["sha256"] == model.digest.removeprefix("sha256:")
    statuses = [e.status for e in events]
    assert statuses[0] == "pulling manifest"
    assert "copying tiny.gguf" in statuses
    assert statuses[-2:] == ["writing manifest", "success"]
    assert store.resolve("tiny").digest == model.digest


def test_quantization_falls_back_to_dominant_tensor_type(
    store: Store, make_gguf: Callable[..., Path], tmp_path: Path
) -> None:
    path = make_gguf(tmp_path / "noftype.gguf", file_type=None)
    assert pull(store, str(path)).manifest.quantization == "Q8_0"


def test_relative_path(store: Store, tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tiny_gguf.parent)
    assert pull_target("./tiny.gguf") == pull_target(str(tiny_gguf))
    assert pull(store, "./tiny.gguf").manifest.source["path"] == str(tiny_gguf)


def test_truncated_gguf_is_refused(
    store: Store, tiny_gguf: Path, tmp_path: Path, store_files: Callable
) -> None:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_gguf.read_bytes()[:-100])
    with pytest.raises(CorruptModel) as info:
        pull(store, str(cut))
    message = str(info.value)
    assert message.startswith(f"{cut} is not a usable GGUF file: truncated")
    assert "\n" not in message
    assert store_files(store) == []


def test_non_gguf_is_refused(store: Store, tmp_path: Path, store_files: Callable) -> None:
    junk = tmp_path / "notes.gguf"
    junk.write_text("these are not the weights you are looking for\n" * 10)
    with pytest.raises(CorruptModel, match=r"not a GGUF file \(magic b'thes'"):
        pull(store, str(junk))
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(CorruptModel, match="not a GGUF file"):
        pull(store, str(empty))
    assert store_files(store) == []


def test_missing_file_and_folder(store: Store, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"missing.gguf not found"):
        pull(store, str(tmp_path / "missing.gguf"))
    with pytest.raises(SourceError, match="is a folder but not a safetensors checkpoint"):
        pull(store, str(tmp_path) + "/")


def test_names_that_are_not_paths_stay_names(store: Store) -> None:
    with pytest.raises(InvalidName, match=r"'\.\.' is not allowed"):
        pull(store, "../x")
    with pytest.raises(InvalidName, match="the name is empty"):
        pull(store, "")


def test_cancel_leaves_nothing(store: Store, tiny_gguf: Path, store_files: Callable) -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(PullCancelled):
        pull(store, str(tiny_gguf), cancel=cancel)
    assert store_files(store) == []


def test_repull_reimports_a_changed_file(
    store: Store, make_gguf: Callable[..., Path], tmp_path: Path, store_files: Callable
) -> None:
    path = make_gguf(tmp_path / "m.gguf", seed=1)
    first = pull(store, str(path))
    make_gguf(path, seed=2)
    second = pull(store, str(path))
    assert second.digest != first.digest
    assert len([f for f in store_files(store) if f.startswith("blobs/")]) == 1  # old one collected
