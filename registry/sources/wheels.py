"""Picking a wheel out of an index's file list: names, versions, compatibility."""

from __future__ import annotations

import re
from dataclasses import dataclass

from corral.registry.simple_index import FileLink, normalize

_RELEASE = re.compile(
    r"(?:(?P<epoch>\d+)!)?(?P<release>\d+(?:\.\d+)*)"
    r"(?:[-_.]?(?P<pre>a|b|rc|alpha|beta|c)[-_.]?(?P<pre_n>\d*))?"
    r"(?:[-_.]?post[-_.]?(?P<post>\d*))?"
    r"(?:[-_.]?dev[-_.]?(?P<dev>\d*))?"
    r"(?:\+[a-z0-9.]+)?",
    re.IGNORECASE,
)
_PRE_RANK = {"a": 0, "alpha": 0, "b": 1, "beta": 1, "c": 2, "rc": 2}


@dataclass(frozen=True)
class Candidate:
    index: str
    link: FileLink
    version: str


def parse_wheel(filename: str) -> tuple[str, str, str] | None:
    """(normalized name, version, 'python-abi-platform') of a wheel file name."""
    if not filename.endswith(".whl"):
        return None
    parts = filename[:-4].split("-")
    if len(parts) not in (5, 6):
        return None
    return normalize(parts[0]), parts[1], "-".join(parts[-3:])


def parse_sdist(filename: str) -> tuple[str, str] | None:
    for ext in (".tar.gz", ".zip", ".tar.bz2", ".tgz"):
        if filename.endswith(ext):
            name, sep, version = filename[: -len(ext)].rpartition("-")
            return (normalize(name), version) if sep else None
    return None


def version_key(version: str) -> tuple | None:
    """A sort key for PEP 440 versions (None when it does not parse)."""
    m = _RELEASE.fullmatch(version)
    if m is None:
        return None
    release = tuple(int(x) for x in m["release"].split("."))
    release += (0,) * (8 - len(release))
    dev = (0, int(m["dev"] or 0)) if m["dev"] is not None else (1, 0)
    pre = (0, _PRE_RANK[m["pre"].lower()], int(m["pre_n"] or 0)) if m["pre"] else (1, 0, 0)
    if m["dev"] is not None and not m["pre"] and m["post"] is None:
        pre = (-1, 0, 0)  # 1.0.dev1 sorts before 1.0a1
    post = int(m["post"] or 0) if m["post"] is not None else -1
    return (int(m["epoch"] or 0), release, pre, post, dev)


def is_prerelease(version: str) -> bool:
    m = _RELEASE.fullmatch(version)
    return m is not None and (m["pre"] is not None or m["dev"] is not None)


def _same_version(a: str, b: str) -> bool:
    ka, kb = version_key(a), version_key(b)
    return ka == kb if ka is not None and kb is not None else a.lower() == b.lower()


def _compat_rank(tags: str) -> int:
    if tags == "py3-none-any":
        return 0
    return 1 if tags.endswith("-none-any") else 2


def choose_wheel(
    package: str, version: str | None, links: list[tuple[str, FileLink]]
) -> Candidate | None:
    """The best wheel of `package` (at `version`, or the newest release)."""
    wanted = normalize(package)
    wheels = []
    for index, link in links:
        parsed = parse_wheel(link.filename)
        if parsed is None or parsed[0] != wanted:
            continue
        if version is not None and not _same_version(parsed[1], version):
            continue
        wheels.append((index, link, parsed[1], parsed[2]))
    if version is None:
        wheels = _newest(wheels)
    if not wheels:
        return None
    index, link, found, _ = min(
        wheels, key=lambda w: (w[1].yanked, _compat_rank(w[3]), w[1].sha256 is None)
    )
    return Candidate(index, link, found)


def _newest(wheels: list[tuple[str, FileLink, str, str]]) -> list[tuple[str, FileLink, str, str]]:
    keyed = [(version_key(w[2]), w) for w in wheels if not w[1].yanked]
    keyed = [(k, w) for k, w in keyed if k is not None]
    final = [(k, w) for k, w in keyed if not is_prerelease(w[2])] or keyed
    if not final:
        return []
    best = max(k for k, _ in final)
    return [w for k, w in final if k == best]


def versions_listed(package: str, links: list[FileLink]) -> list[str]:
    """Every version the index lists for `package`, oldest first."""
    wanted = normalize(package)
    found = set()
    for link in links:
        parsed = parse_wheel(link.filename) or parse_sdist(link.filename)
        if parsed is not None and parsed[0] == wanted:
            found.add(parsed[1])
    return sorted(found, key=lambda v: (version_key(v) is None, version_key(v) or (), v))
