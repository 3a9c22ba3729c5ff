"""Server-sent events as the OpenAI API streams them: one writer, one splitter, one parser.

An event here is one ``data: <payload>`` line and a blank line; a stream ends with
``data: [DONE]``. Writers (the virtual engine, the fake servers, the gateway's error event) frame
with :func:`sse_event`; the gateway forwards whole events with :class:`EventSplitter` (bytes in,
complete events out, never re-encoded); clients read payloads with :class:`SSEParser`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

__all__ = ["DONE_EVENT", "EventSplitter", "SSEParser", "sse_event", "sse_json"]

DONE_EVENT = b"data: [DONE]\n\n"

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def sse_event(data: bytes | str) -> bytes:
    """One event carrying ``data`` (a JSON text, or ``[DONE]``)."""
    payload = data.encode() if isinstance(data, str) else data
    return b"data: " + payload + b"\n\n"


def sse_json(obj: Any) -> bytes:
    """One event carrying ``obj`` as compact JSON."""
    return b"data: " + _dumps(obj).encode() + b"\n\n"


class EventSplitter:
    """Cuts a byte stream at event boundaries: :meth:`feed` returns the complete events so far
    (possibly several, possibly ``b""``) and keeps the partial rest for the next call."""

    __slots__ = ("rest",)

    def __init__(self) -> None:
        self.rest = b""

    def feed(self, data: bytes) -> bytes:
        """Complete events of what was kept plus ``data`` (``b""`` when none is complete)."""
        buffer = self.rest + data if self.rest else data
        cut = buffer.rfind(b"\n\n")
        if cut < 0:
            self.rest = buffer
            return b""
        self.rest = buffer[cut + 2 :]
        return buffer[: cut + 2]


class SSEParser:
    """Incremental server-sent-events parser: feed bytes, get the ``data:`` payloads."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Complete events' data fields from ``data`` plus what was buffered."""
        self._buf += data
        if b"\r" in self._buf:
            self._buf = self._buf.replace(b"\r\n", b"\n")
        while True:
            end = self._buf.find(b"\n\n")
            if end < 0:
                return
            event, self._buf = self._buf[:end], self._buf[end + 2 :]
            parts = [ln[5:].lstrip() for ln in event.split(b"\n") if ln.startswith(b"data:")]
            if parts:
                yield b"\n".join(parts)

    def flush(self) -> Iterator[bytes]:
        """A final event not terminated by a blank line."""
        rest, self._buf = self._buf, b""
        if rest.strip():
            yield from SSEParser().feed(rest + b"\n\n")
