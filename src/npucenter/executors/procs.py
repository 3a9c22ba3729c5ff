"""Child process groups and the tick loop the center's background workers share.

NOTE(executors): every child runs in its own session (process group) so a signal reaches what
it spawned too; on Linux it also asks the kernel for SIGTERM when the parent dies
(``PR_SET_PDEATHSIG``). :func:`terminate` is SIGTERM, a grace period, then SIGKILL;
:func:`kill_now` is the same, synchronously, for ``atexit`` hooks. :class:`Ticker` is the loop
skeleton of the job runner and the deployment reconciler: tick every ``interval_s`` or at once
when woken from any thread, and never let one bad tick stop the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

__all__ = ["Ticker", "kill_now", "signal_group", "spawn_group", "terminate"]

_PR_SET_PDEATHSIG = 1


def spawn_group(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    out: IO[Any],
    cwd: str | Path | None = None,
    preexec: Callable[[], None] | None = None,
    death_signal: int = signal.SIGTERM,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new process group that dies with this process; output to ``out``.

    ``preexec`` runs in the child before exec (a sandbox's rlimits); ``death_signal`` is what
    the child gets when this process dies (SIGKILL for a tenant's job: it cannot ignore it).
    Raises ``OSError`` when the program cannot be started (the caller says what it was).
    """
    parent = os.getpid()

    def before_exec() -> None:
        if preexec is not None:
            preexec()
        if _HAS_PRCTL:
            _die_with_parent(parent, death_signal)

    return subprocess.Popen(
        list(argv),
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=before_exec if (_HAS_PRCTL or preexec is not None) else None,
    )


def signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Send ``sig`` to the child's process group (gone already: nothing to do)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


async def terminate(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM the child's group, SIGKILL after ``grace_s``; returns once it has exited."""
    if proc.poll() is not None:
        return
    signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while proc.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    if proc.poll() is None:
        signal_group(proc, signal.SIGKILL)
        while proc.poll() is None:
            await asyncio.sleep(0.02)


def kill_now(procs: Iterable[subprocess.Popen[bytes]], grace_s: float = 3.0) -> None:
    """Synchronously SIGTERM every live child's group, then SIGKILL what outlives ``grace_s``."""
    live = [p for p in procs if p.poll() is None]
    for proc in live:
        signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for proc in live:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        if proc.poll() is None:
            signal_group(proc, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1.0)


class Ticker:
    """Tick every ``interval_s`` (or at once when :meth:`wake` is called) until cancelled.

    The event and the one-tick-at-a-time lock belong to the running event loop: :meth:`bind`
    makes them anew when the loop changes (tests run each case on a fresh loop).
    """

    def __init__(self, what: str, log: logging.Logger) -> None:
        self.what = what
        self.log = log
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._lock: asyncio.Lock | None = None

    def bind(self) -> asyncio.Lock:
        """Bind to the running loop; the lock one tick holds."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._event is None or self._lock is None:
            self._loop = loop
            self._event = asyncio.Event()
            self._lock = asyncio.Lock()
        return self._lock

    def wake(self) -> None:
        """Tick as soon as possible (thread-safe; nothing when no loop runs)."""
        loop, event = self._loop, self._event
        if loop is None or event is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed in between
            loop.call_soon_threadsafe(event.set)

    async def run_forever(
        self,
        tick: Callable[[], Awaitable[object]],
        interval_s: Callable[[], float],
        *,
        quiet: tuple[type[Exception], ...] = (),
    ) -> None:
        """Call ``tick`` in a loop; ``quiet`` errors log one line, others their traceback."""
        self.bind()
        assert self._event is not None
        event = self._event
        while True:
            event.clear()
            try:
                await tick()
            except asyncio.CancelledError:
                raise
            except quiet as exc:  # one bad tick never stops the loop
                self.log.warning("%s tick failed: %s", self.what, exc)
            except Exception:
                self.log.exception("%s tick failed", self.what)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), interval_s())


def _load_prctl() -> object | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()
_HAS_PRCTL = _PRCTL is not None


def _die_with_parent(parent_pid: int, sig: int = signal.SIGTERM) -> None:
    # runs in the child between fork and exec: ask for ``sig`` when the parent dies, and
    # exit at once if it died before we asked
    _PRCTL(_PR_SET_PDEATHSIG, sig)  # type: ignore[operator]
    if os.getppid() != parent_pid:
        os._exit(1)
