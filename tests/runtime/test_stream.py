from __future__ import annotations

from corral.runtime.stream import TextStream

TOKENS = {0: b"Hello", 1: b" wor", 2: b"ld"}
# "é" is 0xC3 0xA9 and "😀" four bytes: tokens that split them
SPLIT = {10: b"caf\xc3", 11: b"\xa9 ", 12: b"\xf0\x9f", 13: b"\x98\x80", 14: b"!"}


def run(stream: TextStream, ids: list[int]) -> list[str]:
    out = [stream.push(i) for i in ids]
    return [*out, stream.finish()]


def test_pieces_never_split_utf8() -> None:
    pieces = run(TextStream(SPLIT.__getitem__), [10, 11, 12, 13, 14])
    assert "".join(pieces) == "café 😀!"
    for p in pieces:
        p.encode("utf-8")  # every piece is whole characters
    assert pieces[0] == "caf" and pieces[2] == ""


def test_stop_string_across_tokens_is_cut_and_never_shown() -> None:
    toks = {0: b"The answer", 1: b" is 4<|", 2: b"im_end|> tail"}
    s = TextStream(toks.__getitem__, stop=["<|im_end|>"])
    pieces = run(s, [0, 1, 2])
    assert "".join(pieces) == "The answer is 4"
    assert s.stopped
    assert "<" not in "".join(pieces)


def test_held_back_prefix_released_when_not_a_stop() -> None:
    toks = {0: b"a <", 1: b"b>"}
    pieces = run(TextStream(toks.__getitem__, stop=["<|x|>"]), [0, 1])
    assert pieces[0] == "a "
    assert "".join(pieces) == "a <b>"
