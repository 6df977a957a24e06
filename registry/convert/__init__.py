"""Hugging Face safetensors checkpoints -> GGUF, streaming, after llama.cpp's converter.

- checkpoint.py: which files make a checkpoint; reading them (safetensors.py: mmap reader).
- architectures.py: one HF->GGUF table per architecture (names, hyper-parameters, transforms).
- tokenizer.py (+ vocab_bpe.py, vocab_spm.py): the GGUF tokenizer of a checkpoint.
- writer.py: `convert_checkpoint(checkpoint, out)`, one tensor at a time.
"""

from corral.registry.convert.architectures import ARCHITECTURES, Architecture, supported
from corral.registry.convert.checkpoint import Checkpoint
from corral.registry.convert.writer import (
    ConvertProgress,
    ConvertResult,
    architecture_of,
    convert_checkpoint,
)

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "Checkpoint",
    "ConvertProgress",
    "ConvertResult",
    "architecture_of",
    "convert_checkpoint",
    "supported",
]
