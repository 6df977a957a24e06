"""Architectures, registered by the name GGUF gives in `general.architecture`.

Each entry owns its hyper-parameters, tensor table and forward pass, and
overrides only the hooks where it differs from llama.
"""

from __future__ import annotations

from corral.runtime.arch.gemma3 import Gemma3
from corral.runtime.arch.llama import Llama
from corral.runtime.arch.qwen2 import Qwen2
from corral.runtime.arch.qwen3 import Qwen3

ARCHITECTURES: dict[str, type[Llama]] = {
    cls.architecture: cls for cls in (Llama, Qwen2, Qwen3, Gemma3)
}


class UnsupportedArchitecture(ValueError):
    def __init__(self, name: str) -> None:
        supported = ", ".join(ARCHITECTURES)
        super().__init__(
            f"architecture '{name}' is not supported by corral's runtime (supported: {supported})"
        )
        self.name = name


def architecture(name: str) -> type[Llama]:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise UnsupportedArchitecture(name) from None
