"""A job's process mark: how a restarted runner finds what a killed center left running.

NOTE(executors): the runner's first guard is the kernel's: each job's process asks for SIGKILL
when the runner dies (``PR_SET_PDEATHSIG``) and bubblewrap's ``--die-with-parent`` takes the
sandbox's pid namespace down with it. That signal is not certain (a setuid bubblewrap drops it
at exec; an unisolated job's grandchildren never had it), so the runner also leaves a mark:
``job-<id>/process.json`` in the job's run dir (the runner's, not the job's; mode 0600) names
the job's first process by pid, the kernel's start time of that pid (``/proc/PID/stat`` field
22, so a reused pid is never taken for it) and the boot it ran in. The mark is written right
after the spawn and removed once the process is known to have exited.

A runner that starts finds the marks left behind (:func:`find_marks`); a mark whose process is
still alive is an orphan of a center that died: its whole family (the process, its descendants,
and the members of its session, which catches an unisolated job's reparented grandchildren) is
stopped, SIGTERM then SIGKILL, before the job is queued again (:func:`stop_family`). A job is
therefore never running twice at once: a requeued run starts only after the old one is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = [
    "ENV_RUN_TOKEN",
    "MARK_NAME",
    "ProcessMark",
    "boot_id",
    "clear_mark",
    "find_marks",
    "has_family",
    "is_alive",
    "read_mark",
    "stop_family",
    "write_mark",
]

MARK_NAME = "process.json"
#: Set in every job's environment: a random token per run, which a process of a run whose
#: first process has gone must carry to be taken for one of its family.
ENV_RUN_TOKEN = "NPUCENTER_JOB_RUN_TOKEN"
_MAX_MARK_BYTES = 4096


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessMark:
    """The first process of one job's run, as the runner that spawned it saw it."""

    job_id: int
    pid: int
    start_ticks: int  # /proc/PID/stat field 22 (clock ticks since boot): tells a reused pid apart
    boot_id: str  # /proc/sys/kernel/random/boot_id: a mark from before a reboot names nothing
    admitted_at_s: float | None  # the admission the run belonged to
    center_pid: int  # the runner's process (for the log)
    run_token: str = ""  # in the environment of the run's processes (ENV_RUN_TOKEN)


def boot_id() -> str:
    """This boot's id ("" where the kernel does not say)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def write_mark(
    run_dir: Path,
    *,
    job_id: int,
    pid: int,
    admitted_at_s: float | None,
    run_token: str = "",
) -> None:
    """Record ``pid`` as job ``job_id``'s process (atomically; no link followed)."""
    ticks = _stat(pid)
    mark = ProcessMark(
        job_id=job_id,
        pid=pid,
        start_ticks=ticks[2] if ticks is not None else -1,
        boot_id=boot_id(),
        admitted_at_s=admitted_at_s,
        center_pid=os.getpid(),
        run_token=run_token,
    )
    tmp = run_dir / f".{MARK_NAME}.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with open(fd, "w") as f:
        json.dump(asdict(mark), f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, run_dir / MARK_NAME)


def read_mark(run_dir: Path) -> ProcessMark | None:
    """The mark in ``run_dir`` (``None``: none, or not one the runner wrote)."""
    try:
        fd = os.open(run_dir / MARK_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        with open(fd, "rb") as f:
            data = json.loads(f.read(_MAX_MARK_BYTES))
        return ProcessMark(
            job_id=int(data["job_id"]),
            pid=int(data["pid"]),
            start_ticks=int(data["start_ticks"]),
            boot_id=str(data["boot_id"]),
            admitted_at_s=None if data["admitted_at_s"] is None else float(data["admitted_at_s"]),
            center_pid=int(data["center_pid"]),
            run_token=str(data.get("run_token", "")),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def clear_mark(run_dir: Path) -> None:
    """Forget the run's process (it has exited)."""
    with contextlib.suppress(OSError):
        (run_dir / MARK_NAME).unlink()


def find_marks(work_dir: Path) -> list[tuple[Path, ProcessMark]]:
    """``(run dir, mark)`` of every ``job-*`` run dir under ``work_dir`` holding a mark."""
    found: list[tuple[Path, ProcessMark]] = []
    try:
        run_dirs = sorted(p for p in work_dir.iterdir() if p.name.startswith("job-"))
    except OSError:
        return found
    for run_dir in run_dirs:
        mark = read_mark(run_dir)
        if mark is not None:
            found.append((run_dir, mark))
    return found


def is_alive(mark: ProcessMark) -> bool:
    """Whether the mark's process still runs (same boot, same start time, not a zombie)."""
    if mark.start_ticks < 0 or mark.boot_id != boot_id():
        return False
    now = _stat(mark.pid)
    return now is not None and now[2] == mark.start_ticks and now[3] != "Z"


def stop_family(mark: ProcessMark, grace_s: float = 5.0, wait_s: float = 10.0) -> bool:
    """SIGTERM, then after ``grace_s`` SIGKILL, the mark's process and its family.

    The family: the process and its descendants, and the members of its session (which outlive
    it: an unisolated job's grandchildren after the job itself was killed). Each is identified by
    pid and start time, so nothing that merely reuses a pid is signalled. Returns whether all of
    it is gone (bounded by ``grace_s + wait_s``).
    """
    family = _family(mark)
    if not family:
        return True
    _signal(family, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while _living(family) and time.monotonic() < deadline:
        time.sleep(0.05)
    family |= _family(mark)  # forked while we waited
    _signal(family, signal.SIGKILL)
    deadline = time.monotonic() + wait_s
    while _living(family) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _living(family)


def has_family(mark: ProcessMark) -> bool:
    """Whether anything of the mark's run still lives (its process, or its session)."""
    return bool(_family(mark))


# --- /proc ---------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, int, int, str] | None:
    """``(ppid, session id, start ticks, state)`` of ``pid`` (``None``: no such process)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes().decode(errors="replace")
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2 :].split()  # after "pid (comm) ": field 3 onwards
    try:
        return int(fields[1]), int(fields[3]), int(fields[19]), fields[0]
    except (IndexError, ValueError):
        return None


def _family(mark: ProcessMark) -> set[tuple[int, int]]:
    """``(pid, start ticks)`` of the mark's live process, its descendants and its session."""
    if mark.start_ticks < 0 or mark.boot_id != boot_id():
        return set()
    table: dict[int, tuple[int, int, int, str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None and stat[3] != "Z":
                table[int(entry)] = stat
    children: dict[int, list[int]] = {}
    for child, (ppid, _sid, _ticks, _state) in table.items():
        children.setdefault(ppid, []).append(child)
    # members of session ``pid`` started no earlier than the mark's process: while its leader
    # lives the session is its run's; once it is gone, the pid (and a session named after it)
    # may be another's, so a member must also carry the run's token in its environment
    leader = table.get(mark.pid)
    leads = leader is not None and leader[2] == mark.start_ticks
    token = f"{ENV_RUN_TOKEN}={mark.run_token}".encode()
    roots = [
        p
        for p, (_ppid, sid, ticks, _state) in table.items()
        if sid == mark.pid
        and ticks >= mark.start_ticks
        and (leads or (mark.run_token and _carries(p, token)))
    ]
    if leads:
        roots.append(mark.pid)
    seen: set[int] = set()
    while roots:
        current = roots.pop()
        if current in seen:
            continue
        seen.add(current)
        roots.extend(children.get(current, ()))
    seen.discard(os.getpid())
    return {(p, table[p][2]) for p in seen}


def _carries(pid: int, entry: bytes) -> bool:
    """Whether ``entry`` (``NAME=value``) is in the environment ``pid`` started with."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return entry in f.read(1 << 20).split(b"\0")
    except OSError:
        return False


def _living(family: Iterable[tuple[int, int]]) -> bool:
    for pid, ticks in family:
        now = _stat(pid)
        if now is not None and now[2] == ticks and now[3] != "Z":
            return True
    return False


def _signal(family: Iterable[tuple[int, int]], sig: int) -> None:
    for pid, ticks in family:
        now = _stat(pid)
        if now is None or now[2] != ticks:
            continue  # exited, or the pid now names another process
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
