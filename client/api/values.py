"""Values with a textual form on the wire: durations (keep_alive) and timestamps."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

from corral.client.api.codec import WireError

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
_DURATION = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
LONGEST_SECONDS = (2**63 - 1) / 1e9  # Go's longest duration (~292 years); beyond: forever


def parse_duration(value: str | float | int) -> float:
    """Seconds from a keep_alive value: a number of seconds or a Go duration ("5m", "1h30m").

    Negative (or longer than Go's longest duration) means forever and gives math.inf.
    """
    if isinstance(value, bool):
        raise WireError("a duration must be a number of seconds or a string like '5m'")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            seconds = _parse_go_duration(text)
    if math.isnan(seconds):
        raise WireError("a duration must be a number of seconds or a string like '5m', not NaN")
    return math.inf if seconds < 0 or seconds > LONGEST_SECONDS else seconds


def _parse_go_duration(text: str) -> float:
    sign, body = (-1.0, text[1:]) if text.startswith("-") else (1.0, text.lstrip("+"))
    parts = _DURATION.findall(body)
    if not body or "".join(n + u for n, u in parts) != body:
        raise WireError(f"invalid duration '{text}': use seconds or a form like '5m', '1h30m'")
    return sign * sum(float(n) * _UNITS[u] for n, u in parts)


def now_rfc3339() -> str:
    """The current UTC time as Ollama writes it: 2024-05-01T10:00:00.123456Z."""
    return format_time(datetime.now(UTC))


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    """Parse an RFC 3339 time, including Go's nanosecond fractions."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", text.strip()).replace("Z", "+00:00")
    return datetime.fromisoformat(text)
