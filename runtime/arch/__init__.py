"""Architectures, registered by the name GGUF gives in `general.architecture`.

Each entry owns its hyper-parameters, tensor table and forward pass, and
overrides only the hooks where it differs from llama.
"""

from __future__ import annotations

from corral.runtime.arch.llama import Llama

ARCHITECTURES: dict[str, type[Llama]] = {
    "llama": Llama,
}


class UnsupportedArchitecture(ValueError):
    def __init__(self, name: str) -> None:
        supported = ", ".join(sorted(ARCHITECTURES))
        super().__init__(
            f"architecture '{name}' is not supported by corral's runtime (supported: {supported})"
        )
        self.name = name


def architecture(name: str) -> type[Llama]:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise UnsupportedArchitecture(name) from None
