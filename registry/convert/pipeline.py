"""Checkpoint -> GGUF F16/BF16 -> quantized GGUF -> blob, with progress and cancel.

Intermediate files are written beside the blobs under `tmp-` names (the blob
store sweeps stale ones) and removed when the blob is in place or the pull
failed, so nothing half-written is ever visible in the store.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from dataclasses import dataclass
from typing import Any

from corral.registry.blobs import BlobStore
from corral.registry.convert.checkpoint import Checkpoint
from corral.registry.convert.writer import ConvertProgress, ConvertResult, convert_checkpoint
from corral.registry.errors import PullCancelled, SourceError
from corral.registry.gguf_info import check_gguf
from corral.registry.progress import ProgressFn, PullProgress

log = logging.getLogger(__name__)

DEFAULT_QUANTIZATION = "Q4_K_M"
UNQUANTIZED = ("F32", "F16", "BF16")


@dataclass(frozen=True)
class Stored:
    digest: str
    provenance: dict[str, Any]


def check_quantization(name: str) -> str:
    """The canonical name of a quantization type, or a SourceError listing the known ones."""
    key = name.strip().upper()
    if key in UNQUANTIZED:
        return key
    try:
        from corral.runtime.quantize import UnknownMix, get_mix
    except ImportError:  # pragma: no cover - a corral without its quantizer
        log.warning("corral.runtime.quantize is unavailable: models stay unquantized")
        return key
    try:
        return get_mix(key).name
    except UnknownMix as e:
        raise SourceError(str(e)) from None


@dataclass(frozen=True)
class Sink:
    """Where the result goes and who hears about it (a source's FetchContext fits)."""

    blobs: BlobStore
    progress: ProgressFn
    cancel: threading.Event


def store_checkpoint(
    ckpt: Checkpoint,
    ctx: Sink,
    quantization: str,
    *,
    name: str | None = None,
    repo: str | None = None,
) -> Stored:
    """Convert `ckpt`, quantize it to `quantization` (F16/BF16/F32: none), store the blob."""
    target = check_quantization(quantization)
    tmp = ctx.blobs.root / f"tmp-convert-{uuid.uuid4().hex}.gguf"
    quantized = tmp.with_name(tmp.name.replace("convert", "quantize"))
    try:
        outtype = target if target in UNQUANTIZED else None
        result = convert_checkpoint(
            ckpt, tmp, outtype=outtype, name=name, repo=repo,
            progress=_convert_progress(ctx, outtype), cancel=ctx.cancel,
        )  # fmt: skip
        final, quantized_from = tmp, None
        if target not in UNQUANTIZED and _quantize(tmp, quantized, target, ctx):
            final, quantized_from = quantized, result.file_type
        status = "writing model file"
        size = final.stat().st_size
        digest = ctx.blobs.put_file(
            final,
            check=lambda p: check_gguf(p, f"the GGUF converted from {ckpt.where}"),
            progress=lambda done: ctx.progress(PullProgress(status, total=size, completed=done)),
            cancel=ctx.cancel,
        )
    finally:
        for p in (tmp, quantized):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
    done = target if quantized_from or target in UNQUANTIZED else result.file_type
    return Stored(digest, _provenance(result, done, quantized_from))


def _provenance(result: ConvertResult, target: str, quantized_from: str | None) -> dict[str, Any]:
    return {
        "converted_from": f"safetensors {result.source_dtype} ({result.hf_architecture})",
        "converted_to": result.file_type,
        "quantized_from": quantized_from,
        "quantization": target,
    }


def _convert_progress(ctx: Sink, outtype: str | None) -> Any:
    status = f"converting to GGUF {outtype or ''}".rstrip()

    def report(p: ConvertProgress) -> None:
        ctx.progress(PullProgress(status, total=p.total, completed=p.done))

    return report


def _quantize(src: Any, dst: Any, target: str, ctx: Sink) -> bool:
    """Quantize `src` to `dst`; False (and the model stays unquantized) without a quantizer."""
    try:
        from corral.runtime.quantize import QuantizeProgress, quantize_gguf
    except ImportError:  # pragma: no cover - a corral without its quantizer
        log.warning("cannot quantize to %s: corral.runtime.quantize is unavailable", target)
        return False

    status = f"quantizing to {target}"

    def report(p: QuantizeProgress) -> None:
        if ctx.cancel.is_set():
            raise PullCancelled()
        ctx.progress(PullProgress(status, total=p.total, completed=p.done))

    result = quantize_gguf(src, dst, target, progress=report)
    log.info("quantized to %s in %.1f s", result.mix, result.seconds)
    return True
