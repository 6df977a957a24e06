"""GET|HEAD / (is corral running?) and GET /api/version."""

from __future__ import annotations

from importlib import metadata

from aiohttp import web

from corral.client.api import VersionResponse
from corral.daemon.wire_io import json_response

routes = web.RouteTableDef()

RUNNING = "corral is running"
# What /api/version answers as "version": the Ollama release whose API corral follows.
# Clients compare it with their minimum (VS Code's Copilot wants 0.6.4); corral's own
# version (0.1.0) would read as an Ollama from 2023. Its own goes in "corral".
OLLAMA_API_VERSION = "0.9.0"


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
    return json_response(VersionResponse(version=OLLAMA_API_VERSION, corral=version()))
