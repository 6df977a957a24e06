"""The GGUF tokenizer of a checkpoint: vocabulary, special tokens, flags and chat template.

SentencePiece when the checkpoint has `tokenizer.model`, else byte-level BPE from
`tokenizer.json` (llama.cpp's order for llama, qwen2, qwen3 and gemma3). Special
token ids and the add_bos/add_eos flags follow gguf-py's `SpecialVocab`: roles
named in tokenizer_config.json (`bos_token`, ...) are looked up among tokenizer.json's
`added_tokens`, then config.json's `<role>_token_id` fill the gaps; a
TemplateProcessing post-processor that starts with the BOS token (ends with EOS)
sets add_bos (add_eos), and tokenizer_config's `add_bos_token`/`add_eos_token` win.
End-of-turn tokens (<|im_end|>, <|eot_id|>, <end_of_turn>) are not written: llama.cpp
and corral's runtime recognise them by their text when loading, as for any GGUF.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import gguf

from corral.registry.convert.architectures import Architecture
from corral.registry.convert.checkpoint import Checkpoint
from corral.registry.convert.vocab_bpe import bpe_vocab
from corral.registry.convert.vocab_spm import spm_vocab
from corral.registry.errors import SourceError

ROLES = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")


@dataclass(frozen=True)
class Vocab:
    model: str  # tokenizer.ggml.model: "gpt2" (BPE) or "llama" (SentencePiece)
    pre: str
    tokens: list[str]
    types: list[int]
    scores: list[float] | None = None
    merges: list[str] = field(default_factory=list)
    special: dict[str, int] = field(default_factory=dict)  # role -> id
    add: dict[str, bool] = field(default_factory=dict)  # role -> add_<role>_token
    add_space_prefix: bool | None = None
    chat_template: str | list[dict[str, str]] | None = None

    def write(self, w: gguf.GGUFWriter) -> None:
        w.add_tokenizer_model(self.model)
        w.add_tokenizer_pre(self.pre)
        w.add_token_list(self.tokens)
        if self.scores is not None:
            w.add_token_scores(self.scores)
        w.add_token_types(self.types)
        if self.merges:
            w.add_token_merges(self.merges)
        for role, tid in self.special.items():
            getattr(w, f"add_{role}_token_id")(tid)
        for role, flag in self.add.items():
            getattr(w, f"add_add_{role}_token")(flag)
        if self.add_space_prefix is not None:
            w.add_add_space_prefix(self.add_space_prefix)
        if self.chat_template is not None:
            w.add_chat_template(self.chat_template)


def build_vocab(ckpt: Checkpoint, arch: Architecture, config: Mapping[str, Any]) -> Vocab:
    tokenizer = ckpt.json("tokenizer.json")
    tok_config = ckpt.json("tokenizer_config.json") or {}
    vocab_size = config.get("vocab_size")
    spm = ckpt.path("tokenizer.model")
    if spm is not None:
        added = ckpt.json("added_tokens.json") or {}
        v = spm_vocab(spm.read_bytes(), vocab_size, added, tok_config, ckpt.where)
        base = Vocab("llama", "default", v.tokens, v.types, v.scores)
        space_prefix = arch.spm_add_space_prefix
    elif tokenizer is not None:
        b = bpe_vocab(tokenizer, vocab_size, ckpt.where)
        base = Vocab("gpt2", b.pre, b.tokens, b.types, None, b.merges)
        space_prefix = None
    else:
        raise SourceError(f"{ckpt.where} has no tokenizer.json or tokenizer.model")
    if arch.gguf_arch == "llama" and "add_prefix_space" in tok_config:
        space_prefix = bool(tok_config["add_prefix_space"])  # LlamaModel.set_vocab
    special, add = special_tokens(tokenizer or {}, tok_config, config, len(base.tokens))
    if len(base.tokens) in arch.no_bos_vocab_sizes:
        add["bos"] = False
    return Vocab(
        base.model,
        base.pre,
        base.tokens,
        base.types,
        base.scores,
        base.merges,
        special,
        add,
        space_prefix,
        chat_template(ckpt, tok_config),
    )


def _content(entry: Any) -> str | None:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict) and isinstance(entry.get("content"), str):
        return entry["content"]
    return None


def special_tokens(
    tokenizer: Mapping[str, Any],
    tok_config: Mapping[str, Any],
    config: Mapping[str, Any],
    n_vocab: int,
) -> tuple[dict[str, int], dict[str, bool]]:
    """(role -> token id, role -> add flag), as gguf-py's SpecialVocab finds them."""
    added = {a.get("content"): a.get("id") for a in tokenizer.get("added_tokens") or []}
    names = {role: _content(tok_config.get(f"{role}_token")) for role in ROLES}
    add = _template_flags(tokenizer, names)
    special: dict[str, int] = {}
    for role in ROLES:
        flag = tok_config.get(f"add_{role}_token")
        if isinstance(flag, bool):
            add[role] = flag
        tid = added.get(names[role]) if names[role] is not None else None
        if tid is None:
            tid = config.get(f"{role}_token_id")
        if isinstance(tid, int) and not isinstance(tid, bool) and 0 <= tid < n_vocab:
            special[role] = tid
    return special, add


def _template_flags(
    tokenizer: Mapping[str, Any], names: Mapping[str, str | None]
) -> dict[str, bool]:
    post = tokenizer.get("post_processor") or {}
    add: dict[str, bool] = {}
    for proc in post.get("processors", [post]):
        if proc.get("type") == "RobertaProcessing":
            add |= {"bos": True, "eos": True, "sep": True}
        if proc.get("type") != "TemplateProcessing":
            continue
        single = proc.get("single") or []
        if len(single) > 1:
            first = (single[0].get("SpecialToken") or {}).get("id")
            last = (single[-1].get("SpecialToken") or {}).get("id")
            if first:
                add["bos"] = first in (names["bos"], names["cls"])
            if last:
                add["eos"] = last == names["eos"]
    return add


def chat_template(ckpt: Checkpoint, tok_config: Mapping[str, Any]) -> str | list | None:
    """tokenizer_config.json's chat_template, else chat_template.jinja / chat_template.json."""
    found = tok_config.get("chat_template")
    if found is None:
        found = ckpt.text("chat_template.jinja")
    if found is None:
        found = (ckpt.json("chat_template.json") or {}).get("chat_template")
    return found if isinstance(found, str | list) else None
