"""Every quantizer, registered by GGML type name."""

from __future__ import annotations

import numpy as np

from corral.runtime.quantize.base import Quantizer
from corral.runtime.quantize.kquant import K_QUANTIZERS
from corral.runtime.quantize.legacy import LEGACY_QUANTIZERS

QUANTIZERS: dict[str, Quantizer] = {cls.name: cls() for cls in (*LEGACY_QUANTIZERS, *K_QUANTIZERS)}


class UnsupportedTarget(ValueError):
    def __init__(self, name: str) -> None:
        known = ", ".join(QUANTIZERS)
        super().__init__(f"cannot quantize to tensor type {name!r}; corral writes: {known}")


def quantizer(type_name: str) -> Quantizer:
    try:
        return QUANTIZERS[type_name]
    except KeyError:
        raise UnsupportedTarget(type_name) from None


def quantize(values: np.ndarray, type_name: str) -> np.ndarray:
    """(..., n) float values -> (..., row bytes) uint8 encoded as GGML type `type_name`."""
    return quantizer(type_name).quantize(values)
