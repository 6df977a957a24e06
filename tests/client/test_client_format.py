"""Output formats copied from Ollama's CLI (format/bytes.go, format/time.go, Go durations)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from corral.client.api import GenerateResponse
from corral.client.format import (
    WordWrap,
    go_duration,
    human_bytes,
    human_duration,
    human_time,
    table,
    timing_summary,
)


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "0s"),
        (1, "1ns"),
        (1_100, "1.1µs"),
        (2_200_000, "2.2ms"),
        (3_300_000_000, "3.3s"),
        (4 * 60 * 10**9 + 5 * 10**9, "4m5s"),
        (4 * 60 * 10**9 + 5_001_000_000, "4m5.001s"),
        (5 * 3600 * 10**9 + 6 * 60 * 10**9 + 7_001_000_000, "5h6m7.001s"),
        (3600 * 10**9, "1h0m0s"),
        (-1_500_000, "-1.5ms"),
        (1_234_567_890, "1.23456789s"),
    ],
)  # the cases of Go's time/time_test.go durationTests
def test_go_durations(ns: int, text: str) -> None:
    assert go_duration(ns) == text


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1 KB"),
        (1500, "1.5 KB"),
        (10_500, "10 KB"),
        (98_362_432, "98 MB"),
        (4_700_000_000, "4.7 GB"),
        (2_000_000_000_000, "2 TB"),
    ],
)
def test_human_bytes(size: int, text: str) -> None:
    assert human_bytes(size) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.2, "Less than a second"),
        (1, "1 second"),
        (59, "59 seconds"),
        (60, "About a minute"),
        (59 * 60, "59 minutes"),
        (3600, "About an hour"),
        (5 * 3600, "5 hours"),
        (3 * 86400, "3 days"),
        (20 * 86400, "2 weeks"),
        (90 * 86400, "3 months"),
        (800 * 86400, "2 years"),
    ],
)
def test_human_durations(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_human_time_past_and_future() -> None:
    now = datetime(2024, 1, 10, tzinfo=UTC)
    assert human_time(now - timedelta(days=2), now=now) == "2 days ago"
    assert human_time(now + timedelta(minutes=4, seconds=1), now=now) == "4 minutes from now"
    assert human_time(None) == "Never"


def test_tables_pad_columns_with_four_spaces() -> None:
    text = table([("smollm2:135m", "b179c9523d0e", "98 MB")], header=("NAME", "ID", "SIZE"))
    assert text.splitlines() == [
        "NAME            ID              SIZE",
        "smollm2:135m    b179c9523d0e    98 MB",
    ]


def test_the_verbose_summary_has_ollamas_lines() -> None:
    final = GenerateResponse(
        model="m",
        created_at="t",
        done=True,
        total_duration=2_500_000_000,
        load_duration=500_000_000,
        prompt_eval_count=10,
        prompt_eval_duration=250_000_000,
        eval_count=20,
        eval_duration=1_000_000_000,
    )
    assert timing_summary(final) == [
        "total duration:       2.5s",
        "load duration:        500ms",
        "prompt eval count:    10 token(s)",
        "prompt eval duration: 250ms",
        "prompt eval rate:     40.00 tokens/s",
        "eval count:           20 token(s)",
        "eval duration:        1s",
        "eval rate:            20.00 tokens/s",
    ]


def wrapped(text: str, width: int, chunk: int) -> str:
    """`text` streamed through a WordWrap in pieces of `chunk` characters."""
    wrap = WordWrap(width)
    pieces = [wrap.feed(text[i : i + chunk]) for i in range(0, len(text), chunk)]
    return "".join(pieces) + wrap.flush()


@pytest.mark.parametrize("chunk", [1, 3, 100])
def test_answers_wrap_at_spaces_whatever_the_pieces(chunk: int) -> None:
    text = "The quick brown fox jumps over the lazy dog.\nA new line, and a longword here."
    assert wrapped(text, 20, chunk).split("\n") == [
        "The quick brown fox ",
        "jumps over the lazy ",
        "dog.",
        "A new line, and a ",
        "longword here.",
    ]


def test_a_word_wider_than_a_line_goes_through_and_wide_characters_count_twice() -> None:
    assert wrapped("ab " + "x" * 12 + " cd", 10, 2) == "ab \n" + "x" * 12 + "\ncd"
    assert wrapped("你好 世界", 6, 1) == "你好 \n世界"  # 2 + 2 columns, then 1 + 4 > 6
