"""The gateway's ASGI plumbing: message types, reading a bounded body, sending a whole response.

Plain ASGI rather than a framework because the gateway is the hot path (docs/gateway.md).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from npucenter.errors import InvalidRequestError

__all__ = [
    "ClientGone",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "header",
    "read_body",
    "replay",
    "respond",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class ClientGone(Exception):
    """The client disconnected."""


def header(scope: Scope, name: bytes) -> str | None:
    """A request header by its lower-case name (the first one)."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def read_body(receive: Receive, max_bytes: int) -> bytes:
    """The whole request body.

    Raises:
        ClientGone: the client disconnected first.
        InvalidRequestError: the body is over ``max_bytes``.
    """
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise InvalidRequestError(f"request body over {max_bytes} bytes")
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


def replay(body: bytes) -> Receive:
    """A ``receive`` that hands ``body`` over again (the body was read before the handler ran)."""

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = b"application/json",
    *,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Send a whole response (``extra``: more headers)."""
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
