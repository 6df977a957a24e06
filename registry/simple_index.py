"""A client of the "simple" repository API that pip uses.

JSON (PEP 691, `application/vnd.pypi.simple.v1+json`) is asked for first; an
index that answers HTML (PEP 503) is parsed for its links and their
`#sha256=` fragments. file:// indexes (folders with index.html pages) work too.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from dataclasses import dataclass
from html.parser import HTMLParser

from corral.registry.errors import SourceError
from corral.registry.httpio import HttpOptions, NotFoundError, open_url, redact

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
ACCEPT = f"{JSON_TYPE}, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1"
MAX_PAGE = 64 << 20


class ProjectNotFound(SourceError):
    """The index has no such project."""


@dataclass(frozen=True)
class FileLink:
    filename: str
    url: str
    sha256: str | None
    yanked: bool = False
    size: int | None = None


def normalize(name: str) -> str:
    """PEP 503 project name normalization."""
    return re.sub(r"[-_.]+", "-", name).lower()


def project_files(index_url: str, project: str, options: HttpOptions) -> list[FileLink]:
    """The files the index lists for `project`; ProjectNotFound if it has none."""
    page_url = f"{index_url.rstrip('/')}/{normalize(project)}/"
    try:
        response = open_url(page_url, options, {"Accept": ACCEPT})
    except NotFoundError:
        raise ProjectNotFound(
            f"package '{project}' not found on the package index {redact(index_url)}: "
            "check the name"
        ) from None
    with response:
        body = response.read(MAX_PAGE)
        base = response.geturl()
        content_type = response.headers.get("Content-Type", "") or ""
    if content_type.split(";")[0].strip() == JSON_TYPE:
        return _parse_json(body, base, index_url)
    return _parse_html(body, base)


def _parse_json(body: bytes, base: str, index_url: str) -> list[FileLink]:
    try:
        data = json.loads(body)
        files = data["files"]
    except (ValueError, KeyError, TypeError):
        raise SourceError(f"package index {redact(index_url)} sent a malformed JSON page") from None
    links = []
    for item in files:
        if not isinstance(item, dict) or "filename" not in item or "url" not in item:
            continue
        hashes = item.get("hashes") or {}
        size = item.get("size")
        links.append(
            FileLink(
                filename=item["filename"],
                url=urllib.parse.urljoin(base, item["url"]),
                sha256=hashes.get("sha256") if isinstance(hashes, dict) else None,
                yanked=bool(item.get("yanked")),
                size=size if isinstance(size, int) else None,
            )
        )
    return links


def _parse_html(body: bytes, base: str) -> list[FileLink]:
    parser = _LinkParser()
    parser.feed(body.decode("utf-8", errors="replace"))
    links = []
    for href, attrs in parser.links:
        url, _, fragment = urllib.parse.urljoin(base, href).partition("#")
        filename = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
        digest = dict(urllib.parse.parse_qsl(fragment)).get("sha256")
        links.append(FileLink(filename, url, digest, yanked="data-yanked" in attrs))
    return links


class _LinkParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            attributes = dict(attrs)
            href = attributes.get("href")
            if href:
                self.links.append((href, attributes))
