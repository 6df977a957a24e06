"""GET|HEAD / (is corral running?) and GET /api/version."""

from __future__ import annotations

from importlib import metadata

from aiohttp import web

from corral.client.api import VersionResponse
from corral.daemon.wire_io import json_response

routes = web.RouteTableDef()

RUNNING = "corral is running"


def version() -> str:
    try:
        return metadata.version("corral")
    except metadata.PackageNotFoundError:
        return "0.0.0"


@routes.get("/")  # aiohttp answers HEAD for GET routes too
async def root_handler(request: web.Request) -> web.Response:
    return web.Response(text=RUNNING)


@routes.get("/api/version")
async def version_handler(request: web.Request) -> web.Response:
    return json_response(VersionResponse(version=version()))
