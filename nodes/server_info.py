"""The pack's answer to clients of a ComfyUI server: `GET /diffferv/info` says which version of the pack
the server runs and whether the face models (dlib's, for Face Mask and the Edit Report's identity
distances) load there, so `edit --server` and `batch` can check a server before sending it anything
(headless/server_check.py). It says nothing more (no path, no reason: those stay in the server's log),
and finds out about the face models once per server run. Registered on ComfyUI's PromptServer route
table, the way ComfyUI offers packs to add routes; without a server (the in-process runner) there is none
to add."""

from __future__ import annotations

import asyncio
import functools
import logging
import sys

from ..comfyhost.host import PACK_NAME, pack_version
from ..faces.dlib_models import missing_reason

ROUTE = "/diffferv/info"


@functools.cache
def face_models_load() -> bool:
    """Whether dlib's face models load here, found once (a failure is logged once, not retried)."""
    reason = missing_reason()
    if reason:
        logging.warning("DiffFERV: the face models do not load: %s", reason)
    return reason is None


def add_routes() -> None:
    """Add the route to the running ComfyUI server, once; nothing when ComfyUI runs without one (its
    main.py imports `server` and makes the PromptServer before it loads packs; the in-process runner
    imports neither)."""
    prompt_server = getattr(sys.modules.get("server"), "PromptServer", None)
    server = getattr(prompt_server, "instance", None)
    if server is None or any(getattr(route, "path", None) == ROUTE for route in server.routes):
        return

    @server.routes.get(ROUTE)
    async def pack_info(request):
        from aiohttp import web

        loads = await asyncio.to_thread(face_models_load)
        return web.json_response({"pack": PACK_NAME, "version": pack_version(), "face_models": loads})
