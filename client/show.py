"""`corral show NAME`: the sections `ollama show` prints (Model, Capabilities,
Parameters, System, License), from an /api/show response."""

from __future__ import annotations

from collections.abc import Callable

from corral.client.api import ShowResponse
from corral.client.format import table

HEAD_LINES = 2  # System and License show their first lines, then "..."
LENGTHS = (("context_length", "context length"), ("embedding_length", "embedding length"))


def render_show(info: ShowResponse) -> str:
    blocks = []
    for title, rows in SECTIONS:
        found = rows(info)
        if found or title == "Model":
            body = table([["", *r] for r in found])
            blocks.append(f"  {title}\n{body}\n")
    return "\n".join(blocks)


def _model_rows(info: ShowResponse) -> list[list[str]]:
    meta, details = info.model_info, info.details
    arch = str(meta.get("general.architecture") or details.family)
    rows = [["architecture", arch], ["parameters", details.parameter_size or _count(meta)]]
    for key, label in LENGTHS:
        value = meta.get(f"{arch}.{key}")
        if isinstance(value, int | float) and not isinstance(value, bool):
            rows.append([label, str(int(value)) if value == int(value) else str(value)])
    rows.append(["quantization", details.quantization_level])
    return rows


def _count(meta: dict) -> str:
    n = meta.get("general.parameter_count")
    return str(n) if n is not None else ""


def _parameter_rows(info: ShowResponse) -> list[list[str]]:
    return [line.split() for line in info.parameters.splitlines() if line.strip()]


def _head(text: str) -> list[list[str]]:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    rows = [[line] for line in lines[:HEAD_LINES]]
    return [*rows, ["..."]] if len(lines) > HEAD_LINES else rows


SECTIONS: tuple[tuple[str, Callable[[ShowResponse], list[list[str]]]], ...] = (
    ("Model", _model_rows),
    ("Capabilities", lambda info: [[c] for c in info.capabilities]),
    ("Parameters", _parameter_rows),
    ("System", lambda info: _head(info.system)),
    ("License", lambda info: _head(info.license)),
)
