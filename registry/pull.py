"""Pulling a model: name -> recipe or direct source -> blob -> manifest.

Sources are tried in the recipe's order; one that fails (an unreachable hub,
a missing package) is reported in one progress line and the next is tried.
The manifest is written last and atomically, so a pull that fails or is
cancelled leaves no model behind, and the blob it may have written is
collected at once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from corral.registry.catalog import Catalog, Recipe
from corral.registry.errors import (
    CorralError,
    CorruptModel,
    NotInCatalog,
    PullCancelled,
    SourceError,
    SourceUnreachable,
    io_error,
)
from corral.registry.gguf_info import summarize
from corral.registry.httpio import redact
from corral.registry.manifest import Manifest
from corral.registry.names import ModelName
from corral.registry.progress import ProgressFn, PullProgress
from corral.registry.sources import FetchContext, Fetched, Source, is_direct_source, parse_source
from corral.registry.sources.hub_repo import RepoSource
from corral.registry.sources.local import LocalSource
from corral.registry.store import InstalledModel, Store

__all__ = ["PullPlan", "PullProgress", "plan_pull", "pull", "pull_target", "same_source"]

log = logging.getLogger(__name__)

BYTE_EVENT_INTERVAL = 0.1  # seconds between byte-count events of one status


@dataclass(frozen=True)
class PullPlan:
    target: ModelName  # the name the model is installed under
    recipe: Recipe | None
    sources: tuple[str, ...]


def pull_target(name: str) -> ModelName:
    """The name `name` installs under (for sharing one job between identical pulls)."""
    if is_direct_source(name):
        return parse_source(name).default_name()
    return ModelName.parse(name)


def plan_pull(store: Store, name: str) -> PullPlan:
    if is_direct_source(name):
        source = parse_source(name)
        return PullPlan(source.default_name(), None, (name.strip(),))
    target = ModelName.parse(name)
    catalog = Catalog.for_home(store.home)
    recipe = catalog.get(target)
    if recipe is None:
        similar = tuple(
            r.name for r in catalog.recipes() if ModelName.parse(r.name).model == target.model
        )
        raise NotInCatalog(name.strip(), similar)
    return PullPlan(target, recipe, recipe.sources)


def pull(
    store: Store,
    name: str,
    progress: ProgressFn = lambda p: None,
    cancel: threading.Event | None = None,
) -> InstalledModel:
    """Install `name` (a catalog name or a direct source) and return it. Blocking."""
    cancel = cancel or threading.Event()
    emit = _Throttle(progress)
    plan = plan_pull(store, name)
    with _one_pull_at_a_time(store, plan.target, emit, cancel) as waited:
        installed = _installed(store, plan.target)
        if installed is not None and (waited or _up_to_date(installed, plan, emit)):
            emit(PullProgress("success"))  # up to date, or just pulled by the pull we awaited
            return installed
        return _pull_now(store, plan, emit, cancel)


_TARGET_LOCKS: dict[tuple[Path, str], threading.Lock] = {}
_TARGET_LOCKS_GUARD = threading.Lock()
WAIT_CHECK_SECONDS = 0.25


@contextlib.contextmanager
def _one_pull_at_a_time(
    store: Store, target: ModelName, emit: ProgressFn, cancel: threading.Event
) -> Iterator[bool]:
    """Hold the pull of `target` in this store; yields whether another pull of it had to
    be awaited first. Identical pulls at once (several clients, or scripts on a machine)
    then share the first one's work instead of racing over its partial download."""
    with _TARGET_LOCKS_GUARD:
        lock = _TARGET_LOCKS.setdefault((store.home, target.full), threading.Lock())
    waited = not lock.acquire(blocking=False)
    if waited:
        emit(PullProgress(f"waiting for another pull of {target}"))
        while not lock.acquire(timeout=WAIT_CHECK_SECONDS):
            if cancel.is_set():
                raise PullCancelled()
    try:
        yield waited
    finally:
        lock.release()


def _pull_now(
    store: Store, plan: PullPlan, emit: ProgressFn, cancel: threading.Event
) -> InstalledModel:
    emit(PullProgress("pulling manifest"))
    quantization = plan.recipe.quantization if plan.recipe else None
    ctx = FetchContext(store.blobs, emit, cancel, quantization)
    fetched = _fetch_first(plan, ctx)
    try:
        manifest = _manifest(plan, fetched, store)
        emit(PullProgress("writing manifest"))
        model = store.commit(plan.target, manifest)
    except BaseException:
        store.blobs.unpin(fetched.digest)
        store.gc()
        raise
    store.blobs.unpin(fetched.digest)
    emit(PullProgress("success"))
    return model


def _installed(store: Store, name: ModelName) -> InstalledModel | None:
    try:
        return store.find(name)
    except CorruptModel as e:  # a broken install is replaced by pulling again
        log.warning("%s; pulling it again", e)
        return None


def _up_to_date(installed: InstalledModel, plan: PullPlan, emit: ProgressFn) -> bool:
    """Whether pulling again would change nothing: the model is what its recipe makes
    (not, say, another model copied onto the name), or what this very source gave
    (`_source_unchanged`). A local file may have changed since it was imported, so it is
    always imported again."""
    recipe, manifest = plan.recipe, installed.manifest
    if recipe is None:
        return _source_unchanged(parse_source(plan.sources[0]), manifest.source, emit)
    made = (
        dict(recipe.parameters),
        recipe.template,
        recipe.system,
        recipe.license,
        [dict(m) for m in recipe.messages],
    )
    have = (
        manifest.parameters,
        manifest.template,
        manifest.system,
        manifest.license,
        [dict(m) for m in manifest.messages],
    )
    sources = [parse_source(spec) for spec in recipe.sources]
    from_recipe = any(same_source(source, manifest.source.get("source")) for source in sources)
    return "recipe" in manifest.source and made == have and from_recipe


def _source_unchanged(source: Source, recorded: dict[str, Any], emit: ProgressFn) -> bool:
    """Whether the installed model came from `source` as it stands: the same source
    (another URL, revision, hash or quantization is another model) and, for a hub
    repository not pinned to that commit, still what the hub has (Ollama checks for a
    newer model on every pull). A hub that cannot answer leaves the installed model in
    place, saying so."""
    if isinstance(source, LocalSource) or not same_source(source, recorded.get("source")):
        return False
    is_current = getattr(source, "is_current", None)
    revision = recorded.get("revision")
    if is_current is None or (revision and revision == getattr(source, "revision", None)):
        return True  # a URL, a wheel version, a commit: fixed by the source itself
    try:
        return bool(is_current(recorded))
    except CorralError as e:
        emit(PullProgress(f"cannot check for a newer version ({e}); keeping the installed one"))
        return True


def same_source(source: Source, recorded: object) -> bool:
    """Whether `recorded` (a manifest's source as written) is `source`, however spelled."""
    if not isinstance(recorded, str):
        return False
    try:
        other = parse_source(recorded)
    except CorralError:
        return False
    if isinstance(source, RepoSource) and isinstance(other, RepoSource):
        return source.identity() == other.identity()
    return redact(source.spec) == redact(other.spec)


def _fetch_first(plan: PullPlan, ctx: FetchContext) -> Fetched:
    failures: list[tuple[str, CorralError]] = []
    for i, spec in enumerate(plan.sources):
        if ctx.cancel.is_set():
            raise PullCancelled()
        try:
            return _fetch(spec, ctx)
        except PullCancelled:
            raise
        except CorralError as e:
            failures.append((spec, e))
            if i + 1 < len(plan.sources):
                line = f"{e}, trying {plan.sources[i + 1]}"
                log.warning("pull %s: %s", plan.target, line)
                ctx.progress(PullProgress(line))
    if len(failures) == 1:
        raise failures[0][1]
    detail = "; ".join(f"{spec}: {e}" for spec, e in failures)
    unreachable = all(isinstance(e, SourceUnreachable) for _, e in failures)
    kind = SourceUnreachable if unreachable else SourceError
    raise kind(f"could not pull {plan.target} from any source: {detail}")


def _fetch(spec: str, ctx: FetchContext) -> Fetched:
    source: Source = parse_source(spec)
    try:
        return source.fetch(ctx)
    except OSError as e:  # disk full, permissions, a file vanishing under us
        raise io_error(f"pulling {spec}", e) from None


def _manifest(plan: PullPlan, fetched: Fetched, store: Store) -> Manifest:
    path = store.blobs.path(fetched.digest)
    info = summarize(path)
    recipe = plan.recipe
    source = dict(fetched.provenance)
    if recipe is not None:
        source["recipe"] = recipe.origin
    return Manifest(
        name=str(plan.target),
        model=fetched.digest,
        format="gguf",
        architecture=info.architecture,
        parameter_count=info.parameter_count,
        quantization=info.quantization,
        context_length=info.context_length,
        source=source,
        parameters=dict(recipe.parameters) if recipe else {},
        template=recipe.template if recipe else None,
        system=recipe.system if recipe else None,
        license=recipe.license if recipe else info.license,
        messages=[dict(m) for m in recipe.messages] if recipe else [],
        created_at=datetime.now(UTC),
    )


class _Throttle:
    """Pass every event except byte counts that come faster than BYTE_EVENT_INTERVAL."""

    def __init__(self, progress: ProgressFn) -> None:
        self._progress = progress
        self._last: dict[str, float] = {}

    def __call__(self, event: PullProgress) -> None:
        moving = event.completed is not None and event.completed != event.total
        if moving and event.completed:
            now = time.monotonic()
            if now - self._last.get(event.status, 0.0) < BYTE_EVENT_INTERVAL:
                return
            self._last[event.status] = now
        self._progress(event)
