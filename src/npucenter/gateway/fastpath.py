"""The tenant's hot path straight to the gateway, around the control plane's app.

NOTE(gateway): `npucenter up` mounts the gateway at ``/v1`` inside the FastAPI control plane.
Reached through it, a completion first passes the control plane's middleware (the API guard,
which has nothing to check on these paths, FastAPI's exit stack) and is matched against every
API route before the mount: ~25 % of the gateway process's time per request in the profile at
1,000 requests/s. :class:`GatewayFastPath`, the outermost middleware, hands ``POST
/v1/chat/completions`` and ``POST /v1/completions`` to the gateway directly, with the scope the
mount would give it; every other request goes through the control plane as before.
"""

from __future__ import annotations

from typing import Any

__all__ = ["GatewayFastPath"]

HOT_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})


class GatewayFastPath:
    """ASGI middleware: the hot completion paths go to ``gateway``, the rest to ``app``."""

    def __init__(self, app: Any, gateway: Any, prefix: str = "/v1") -> None:
        self.app = app
        self.gateway = gateway
        self.prefix = prefix

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] in HOT_PATHS and scope["method"] == "POST":
            root = scope.get("root_path", "")
            await self.gateway({**scope, "root_path": root + self.prefix}, receive, send)
            return
        await self.app(scope, receive, send)
