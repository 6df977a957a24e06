"""Pre-tokenizers: how llama.cpp cuts text into words before byte-level BPE.

One table maps each `tokenizer.ggml.pre` value to a `PreTokenizer`: the regexes
llama.cpp's `llm_tokenizer_bpe` uses for that family (src/llama-vocab.cpp),
applied in order. Every regex splits each piece left by the previous one into
its matches and the gaps between them (llama.cpp's `unicode_regex_split`), so a
later regex never sees across an earlier cut.

How this matches llama.cpp's src/unicode.cpp:
- The gpt2, llama3, qwen2 and qwen35 regexes are hand-coded there; their
  behaviour is that of the regexes below (gpt2 gets the `|\\s+` its hand-coded
  version falls back to).
- Every other regex runs there on text where each non-ASCII whitespace
  character became U+000B, so e.g. U+3000 never matches a literal class that
  contains it; `split` folds the text the same way before matching.
- `\\s` here and there is the same set of 25 code points. `\\p{L}`, `\\p{N}`, ...
  come from the `regex` module's Unicode database; llama.cpp's tables are an
  older Unicode version, so characters assigned only in newer versions (new
  scripts, mostly) may be classified differently.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import regex


class TokenizerError(ValueError):
    """The GGUF tokenizer metadata is missing or inconsistent."""


class UnsupportedTokenizer(TokenizerError):
    """The GGUF asks for a tokenizer model or pre-tokenizer corral does not implement."""


# Non-ASCII whitespace, as llama.cpp's regex fallback sees it (U+000B).
_WS_FOLD = str.maketrans(
    dict.fromkeys(
        [0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F, 0x205F, 0x3000],
        0x0B,
    )
)

_CONTRACTIONS_CI = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3 = (
    _CONTRACTIONS_CI + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2 = (
    _CONTRACTIONS_CI + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN35 = (
    _CONTRACTIONS_CI + r"|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"
    r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_DEEPSEEK_LATIN = (
    r"\s?[A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293"
    r"\u0295-\u02af\u0370-\u0373\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c"
    r"\u038e-\u03a1\u03a3-\u03f5\u03f7-\u0481\u048a-\u052f\u0531-\u0556\u10a0-\u10c5"
    r"\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77"
    r"\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45\u1f48-\u1f4d\u1f50-\u1f57\u1f59"
    r"\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe\u1fc2-\u1fc4\u1fc6-\u1fcc"
    r"\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc\u2102\u2107"
    r"\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u2139"
    r"\u213c-\u213f\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee"
    r"\u2cf2\u2cf3\ua640-\ua66d\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e"
    r"\uab70-\uabbf\ufb00-\ufb06\ufb13-\ufb17\uff21-\uff3a\uff41-\uff5a\U00010400-\U0001044f"
    r"\U000104b0-\U000104d3\U000104d8-\U000104fb\U00010c80-\U00010cb2\U00010cc0-\U00010cf2"
    r"\U000118a0-\U000118df\U0001e900-\U0001e943]+"
)
_DEEPSEEK_CJK = "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+"
_ASCII_PUNCT_WORD = r"[!" '"' r"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+"
_DEEPSEEK3 = (
    _ASCII_PUNCT_WORD + r"|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_UPPER_RUN = r"((?=[\p{L}])([^a-z]))"  # llama.cpp's stand-in for [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]
_LOWER_RUN = r"((?=[\p{L}])([^A-Z]))"  # ... and for [\p{Ll}\p{Lm}\p{Lo}\p{M}]
_WORD_CASED = (
    rf"[^\r\n\p{{L}}\p{{N}}]?{_UPPER_RUN}*{_LOWER_RUN}+{_CONTRACTIONS_CI}?"
    rf"|[^\r\n\p{{L}}\p{{N}}]?{_UPPER_RUN}+{_LOWER_RUN}*{_CONTRACTIONS_CI}?"
)
_GPT4O = _WORD_CASED + r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_TEKKEN = (
    rf"[^\r\n\p{{L}}\p{{N}}]?{_UPPER_RUN}*{_LOWER_RUN}+|[^\r\n\p{{L}}\p{{N}}]?{_UPPER_RUN}+"
    rf"{_LOWER_RUN}*|\p{{N}}| ?[^\s\p{{L}}\p{{N}}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_SEED_CODER = (
    _CONTRACTIONS_CI + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_BAILINGMOE = (
    r"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"
)
_UFAKZEKA = r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_EXAONE_MOE = (
    _CONTRACTIONS_CI + r"|[^\r\n\p{L}\p{N}]?(?:\p{L}\p{M}*(?: \p{L}\p{M}*)*)+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n/]?|\s*[\r\n]|\s+(?!\S)|\s+"
)
_MINICPM5 = (
    _CONTRACTIONS_CI + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}+"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_BLOOM = r" ?[^(\s|.,!?\u2026\u3002\uff0c\u3001\u0964\u06d4\u060c)]+"


@dataclass(frozen=True)
class PreTokenizer:
    """One llama.cpp pre-tokenizer family: its regexes and the vocab flags it sets."""

    patterns: tuple[str, ...]
    ignore_merges: bool = False  # a word that is itself a token skips BPE
    add_bos: bool = False  # llama.cpp's default when the GGUF has no add_bos_token

    @cached_property
    def _compiled(self) -> tuple[regex.Pattern[str], ...]:
        return tuple(regex.compile(p) for p in self.patterns)

    def split(self, text: str) -> list[str]:
        """Cut `text` into words; concatenating them gives `text` back."""
        folded = text if text.isascii() else text.translate(_WS_FOLD)
        spans = [(0, len(text))]
        for rx in self._compiled:
            spans = _split_spans(rx, folded, spans)
        return [text[s:e] for s, e in spans]


def _split_spans(
    rx: regex.Pattern[str], text: str, spans: list[tuple[int, int]]
) -> list[tuple[int, int]]:
    """Each span cut into the matches of `rx` inside it and the gaps between them."""
    out: list[tuple[int, int]] = []
    append = out.append
    for start, end in spans:
        pos = start
        for m in rx.finditer(text, start, end):
            s, e = m.span()
            if s > pos:
                append((pos, s))
            if e > s:
                append((s, e))
            pos = e
        if pos < end:
            append((pos, end))
    return out


GPT2 = PreTokenizer((_GPT2,))
STARCODER = PreTokenizer((r"\p{N}", _GPT2))
LLAMA3 = PreTokenizer((_LLAMA3,), ignore_merges=True, add_bos=True)
DBRX = PreTokenizer((_LLAMA3,))
QWEN2 = PreTokenizer((_QWEN2,))
QWEN35 = PreTokenizer((_QWEN35,))
_DEEPSEEK_PUNCT = r"\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+"
DEEPSEEK_LLM = PreTokenizer(
    (r"[\r\n]", _DEEPSEEK_LATIN, _DEEPSEEK_PUNCT, r"\s+\Z", _DEEPSEEK_CJK, r"\p{N}+")
)
DEEPSEEK_CODER = PreTokenizer((r"[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", _DEEPSEEK_CJK, r"\p{N}"))
DEEPSEEK3 = PreTokenizer((r"\p{N}{1,3}", "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+", _DEEPSEEK3))
FALCON = PreTokenizer((r"[\p{P}\$\+<=>\^~\|`]+", _GPT2, r"[0-9][0-9][0-9]"))
DEFAULT = PreTokenizer((r"[\p{P}\$\+<=>\^~\|]+", _GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"))
GPT4O = PreTokenizer((_GPT4O,))
TEKKEN = PreTokenizer((_TEKKEN,), ignore_merges=True, add_bos=True)
SEED_CODER = PreTokenizer((_SEED_CODER,))
BAILINGMOE = PreTokenizer((_BAILINGMOE,))
UFAKZEKA = PreTokenizer((_UFAKZEKA,))
LAGUNA = PreTokenizer((r"[^\n]+|[\n]+", _QWEN2))
EXAONE_MOE = PreTokenizer((_EXAONE_MOE,))
MINICPM5 = PreTokenizer((r"\p{N}{1,3}", _MINICPM5), ignore_merges=True)
BLOOM = PreTokenizer((_BLOOM,))
VIKING = PreTokenizer((_BLOOM, r"\p{N}"))

# `tokenizer.ggml.pre` value -> family, as llama.cpp's llama_vocab::impl::load maps them.
# ("gpt2" is corral's alias of llama.cpp's "gpt-2".)
_FAMILIES: tuple[tuple[PreTokenizer, tuple[str, ...]], ...] = (
    (DEFAULT, ("default",)),
    (GPT2, ("gpt-2", "gpt2", "phi-2", "gigachat", "a.x-4.0", "mellum", "mpt", "olmo", "jais")),
    (GPT2, ("trillion", "granite-docling", "exaone4")),
    (STARCODER, ("starcoder", "refact", "command-r", "smollm", "codeshell", "exaone")),
    (STARCODER, ("minerva-7b", "mellum2")),
    (LLAMA3, ("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral")),
    (LLAMA3, ("midm-2.0", "lfm2")),
    (DBRX, ("dbrx", "smaug-bpe")),
    (QWEN2, ("qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "stablelm2")),
    (QWEN2, ("hunyuan", "solar-open", "grok-2")),
    (QWEN35, ("qwen35",)),
    (DEEPSEEK_LLM, ("deepseek-llm",)),
    (DEEPSEEK_CODER, ("deepseek-coder",)),
    (DEEPSEEK3, ("deepseek-v3", "hunyuan-dense", "joyai-llm", "hy_v4")),
    (FALCON, ("falcon",)),
    (GPT4O, ("gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2")),
    (TEKKEN, ("tekken",)),
    (SEED_CODER, ("seed-coder",)),
    (BAILINGMOE, ("bailingmoe", "bailingmoe2", "llada-moe")),
    (UFAKZEKA, ("ufakzeka",)),
    (LAGUNA, ("laguna",)),
    (EXAONE_MOE, ("exaone-moe",)),
    (MINICPM5, ("minicpm5",)),
    (BLOOM, ("bloom", "gpt3-finnish", "poro-chat")),
    (VIKING, ("viking",)),
)
PRE_TOKENIZERS: dict[str, PreTokenizer] = {
    name: family for family, names in _FAMILIES for name in names
}


def pre_tokenizer(name: str | None) -> PreTokenizer:
    """The pre-tokenizer for a `tokenizer.ggml.pre` value (None: llama.cpp's "default")."""
    if name is None or name == "":
        return DEFAULT
    try:
        return PRE_TOKENIZERS[name]
    except KeyError:
        known = ", ".join(sorted(PRE_TOKENIZERS))
        raise UnsupportedTokenizer(
            f"unsupported pre-tokenizer {name!r} (tokenizer.ggml.pre); corral supports: {known}"
        ) from None
