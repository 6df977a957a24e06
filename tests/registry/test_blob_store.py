import hashlib
import io
import os
import threading
import time
from pathlib import Path

import pytest

from corral.registry.blobs import BlobStore, digest_of
from corral.registry.errors import CorruptModel, PullCancelled


def _digest(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def test_put_stream_writes_content_addressed_blob(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    data = os.urandom(3 << 20)
    seen: list[int] = []
    digest = blobs.put_stream(io.BytesIO(data), progress=seen.append)
    assert digest == _digest(data)
    path = blobs.path(digest)
    assert path.name == f"sha256-{digest[7:]}"
    assert path.read_bytes() == data
    assert seen[-1] == len(data)
    assert [p.name for p in blobs.root.iterdir()] == [path.name]  # no temp file left
    assert digest_of(path) == digest


def test_expected_digest_mismatch_leaves_nothing(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    wrong = _digest(b"something else")
    with pytest.raises(CorruptModel) as info:
        blobs.put_stream(io.BytesIO(b"payload"), expected=wrong, what="model.gguf")
    message = str(info.value)
    assert "model.gguf" in message and wrong in message and _digest(b"payload") in message
    assert list(blobs.root.iterdir()) == []


def test_failed_check_leaves_nothing(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")

    def refuse(path: Path) -> None:
        assert path.read_bytes() == b"payload"  # the check sees the complete file
        raise CorruptModel("not a GGUF")

    with pytest.raises(CorruptModel, match="not a GGUF"):
        blobs.put_stream(io.BytesIO(b"payload"), check=refuse)
    assert list(blobs.root.iterdir()) == []


def test_cancel_leaves_nothing(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(PullCancelled):
        blobs.put_stream(io.BytesIO(b"x" * 100), cancel=cancel)
    assert list(blobs.root.iterdir()) == []


def test_existing_blob_is_never_modified(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    digest = blobs.put_stream(io.BytesIO(b"same"))
    inode = blobs.path(digest).stat().st_ino
    assert blobs.put_stream(io.BytesIO(b"same")) == digest
    assert blobs.path(digest).stat().st_ino == inode
    assert len(list(blobs.root.iterdir())) == 1


def test_gc_removes_unreferenced_and_spares_pinned(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    keep = blobs.put_stream(io.BytesIO(b"keep"))
    drop = blobs.put_stream(io.BytesIO(b"drop"))
    fresh = blobs.put_stream(io.BytesIO(b"fresh"))  # pinned until unpinned
    for d in (keep, drop):
        blobs.unpin(d)
    assert blobs.gc({keep}) == [drop]
    assert blobs.digests() == {keep, fresh}
    blobs.unpin(fresh)
    assert blobs.gc({keep}) == [fresh]


def test_gc_removes_only_stale_temporary_files(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    old, new = blobs.root / "tmp-old", blobs.partial_path("pypi-abc")
    old.write_bytes(b"x")
    new.write_bytes(b"y")
    day_ago = time.time() - 2 * 24 * 3600
    os.utime(old, (day_ago, day_ago))
    blobs.gc(set())
    assert not old.exists()
    assert new.exists()


@pytest.mark.parametrize("bad", ["sha256:../../etc/passwd", "md5:abc", "sha256:" + "G" * 64, ""])
def test_bad_digest_cannot_name_a_path(tmp_path: Path, bad: str) -> None:
    with pytest.raises(CorruptModel, match="not a sha256 digest"):
        BlobStore(tmp_path / "blobs").path(bad)
