"""Run a coroutine on the fastest event loop available (uvloop when installed).

The generator's own accuracy at thousands of requests per second depends on the loop's overhead;
uvloop ships with ``uvicorn[standard]``, a dependency of npucenter, and asyncio is the fallback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run_async"]

T = TypeVar("T")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(coro)`` on uvloop when available."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency via uvicorn[standard]
        return asyncio.run(coro)
    return uvloop.run(coro)
