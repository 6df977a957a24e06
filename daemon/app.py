"""The aiohttp application factory: `create_app(config)`.

Tests run the app in-process; `corral serve` (serve.py) runs it on a socket.
The store and scheduler live for the app's lifetime (a cleanup context);
at shutdown every running generation or pull is cancelled before models are
unloaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from corral.daemon import (
    routes_create,
    routes_embed,
    routes_generate,
    routes_manage,
    routes_meta,
    routes_models,
    routes_openai,
    security,
)
from corral.daemon.config import DaemonConfig
from corral.daemon.errors import error_middleware
from corral.daemon.openai_io import openai_error_middleware
from corral.daemon.scheduler import Loader, Scheduler, load_engine
from corral.daemon.state import STATE, DaemonState
from corral.registry.store import Collected, Store

log = logging.getLogger(__name__)

ROUTE_TABLES = (
    routes_meta.routes,
    routes_models.routes,
    routes_generate.routes,
    routes_embed.routes,
    routes_manage.routes,
    routes_create.routes,
    routes_openai.routes,
)
MAX_REQUEST_BYTES = 64 * 1024 * 1024  # long conversations; blob uploads stream (to a disk floor)


def create_app(config: DaemonConfig, *, loader: Loader = load_engine) -> web.Application:
    # Outermost first: under /v1 errors take OpenAI's shape before error_middleware sees them.
    middlewares = [error_middleware, openai_error_middleware]
    app = web.Application(middlewares=middlewares, client_max_size=MAX_REQUEST_BYTES)
    security.install(app, config)  # token, Host and Origin checks before anything else
    for table in ROUTE_TABLES:
        app.add_routes(table)

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        config.home.mkdir(parents=True, exist_ok=True)
        scheduler = Scheduler(
            default_keep_alive=config.keep_alive,
            max_loaded=config.max_loaded_models,
            num_parallel=config.num_parallel,
            max_memory=config.max_memory,
            max_queue=config.max_queue,
            loader=loader,
        )
        store = Store(config.home, on_collect=unloader(scheduler))
        state = DaemonState(config=config, store=store, scheduler=scheduler)
        app[STATE] = state
        log.info("models in %s", config.home)
        # blobs no manifest uses (uploads never created from), temporary files of a
        # crash and partial downloads untouched for a day go, as Ollama prunes at startup
        await asyncio.to_thread(state.store.collect_at_startup)
        yield
        await scheduler.close()
        state.workers.shutdown(wait=False, cancel_futures=True)

    async def on_shutdown(app: web.Application) -> None:
        app[STATE].cancel_all()

    app.cleanup_ctx.append(lifetime)
    app.on_shutdown.append(on_shutdown)
    return app


def unloader(scheduler: Scheduler) -> Collected:
    """Unload the blobs the store collects (a model whose last name a delete, create or
    pull removed): nothing can ask for them again. Called from the store's thread; the
    unloads run on the event loop before the request that collected them answers."""
    loop = asyncio.get_running_loop()

    def collected(digests: list[str]) -> None:
        for digest in digests:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(scheduler.unload, digest)

    return collected
