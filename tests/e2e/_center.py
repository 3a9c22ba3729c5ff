"""Start-up the e2e tests share: `npucenter up` or a virtual engine on a free loopback port.

Each helper starts the process, waits (bounded) until it answers its health check and stops it
on the way out, failing with the process's log when it exits or never answers. The tests keep
their own environment (which NPUCENTER_* variables they clear or set) and arguments.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from npucenter.executors import free_port

CLI = [sys.executable, "-m", "npucenter.cli.main"]
ENGINE = [sys.executable, "-m", "npucenter.engines.virtual"]


@dataclass
class Up:
    """A started `npucenter up`: its process, base URL and (when one was asked for) log."""

    proc: subprocess.Popen[bytes]
    url: str
    port: int
    log_path: Path | None = None

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path is not None else "(no log kept)"


def wait_healthy(
    url: str,
    proc: subprocess.Popen[bytes],
    *,
    what: str = "npucenter up",
    path: str = "/healthz",
    timeout_s: float = 60.0,
    log_path: Path | None = None,
) -> None:
    """Poll ``GET url+path`` until it answers 200; fail if ``proc`` exits or time runs out."""

    def log() -> str:
        return ": " + log_path.read_text() if log_path is not None else ""

    deadline = time.monotonic() + timeout_s
    while True:
        assert proc.poll() is None, f"{what} exited{log()}"
        try:
            if httpx.get(f"{url}{path}", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{what} did not answer{log()}"
        time.sleep(0.1)


def stop(
    proc: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, timeout_s: float = 20.0
) -> None:
    """Send ``sig`` to a live process, SIGKILL it if it has not exited within ``timeout_s``."""
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def start_up(
    data_dir: Path,
    env: Mapping[str, str],
    *args: str,
    port: int | None = None,
    log_path: Path | None = None,
) -> Up:
    """`npucenter up --port P --data-dir D ARGS...` once it answers /healthz.

    Output goes to ``log_path`` (else nowhere); the process is killed if it never answers.
    """
    port = port or free_port()
    argv = [*CLI, "up", "--port", str(port), "--data-dir", str(data_dir), *args]
    if log_path is None:
        proc = subprocess.Popen(
            argv, env=dict(env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    else:
        with log_path.open("w") as log:
            proc = subprocess.Popen(argv, env=dict(env), stdout=log, stderr=subprocess.STDOUT)
    up = Up(proc=proc, url=f"http://127.0.0.1:{port}", port=port, log_path=log_path)
    try:
        wait_healthy(up.url, proc, log_path=log_path)
    except BaseException:
        stop(proc, sig=signal.SIGKILL)
        raise
    return up


@contextmanager
def running_up(
    data_dir: Path,
    env: Mapping[str, str],
    *args: str,
    log_path: Path | None = None,
    sig: int = signal.SIGTERM,
    stop_timeout_s: float = 20.0,
) -> Iterator[Up]:
    """:func:`start_up`, stopped with ``sig`` (then SIGKILL) on the way out."""
    up = start_up(data_dir, env, *args, log_path=log_path)
    try:
        yield up
    finally:
        stop(up.proc, sig=sig, timeout_s=stop_timeout_s)


@contextmanager
def running_engine(args: Sequence[str], *, timeout_s: float = 30.0) -> Iterator[str]:
    """``python -m npucenter.engines.virtual ARGS --port P``; yields its base URL."""
    port = free_port()
    proc = subprocess.Popen([*ENGINE, *args, "--port", str(port)], stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, what="virtual engine", path="/health", timeout_s=timeout_s)
        yield url
    finally:
        stop(proc, timeout_s=10)
