"""Shared CLI plumbing: the error wrapper, JSON output and Rich console."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from rich.console import Console
from rich.markup import escape

from npucenter.errors import NpuCenterError

__all__ = ["console", "err_console", "handle_errors", "print_json"]

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def print_json(obj: Any) -> None:
    """Print one JSON document on stdout (the contract of every ``--json`` flag)."""
    sys.stdout.write(json.dumps(obj, indent=2, default=_default) + "\n")
    sys.stdout.flush()


def _default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def fail(exc: NpuCenterError) -> None:
    """Print ``error[<code>]: <message>`` to stderr and exit with the error's exit code."""
    err_console.print(
        f"[bold red]error\\[{escape(exc.code)}][/]: {escape(str(exc))}",
        highlight=False,
        soft_wrap=True,
    )
    raise SystemExit(exc.exit_code)


def handle_errors(func: F) -> F:
    """Wrap a command so typed errors exit with their code and one actionable line."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except NpuCenterError as exc:
            fail(exc)
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise SystemExit(130) from None

    return wrapper  # type: ignore[return-value]
