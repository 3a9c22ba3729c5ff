"""Process marks: a restarted runner finds a dead center's job by pid *and* start time."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from npucenter.executors.runmark import (
    ENV_RUN_TOKEN,
    MARK_NAME,
    clear_mark,
    find_marks,
    has_family,
    is_alive,
    read_mark,
    stop_family,
    write_mark,
)

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")

# ignores SIGTERM, starts a grandchild in its session, then a great-grandchild in a new session
STUBBORN = (
    "import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], "
    "start_new_session=True); print('ready', flush=True); time.sleep(60)"
)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _children(pid: int) -> set[int]:
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.add(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return out


def test_a_mark_round_trips_and_names_a_live_process(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_mark(tmp_path, job_id=7, pid=proc.pid, admitted_at_s=12.5)
        mark = read_mark(tmp_path)
        assert mark is not None and (mark.job_id, mark.pid, mark.admitted_at_s) == (
            7,
            proc.pid,
            12.5,
        )
        assert (tmp_path / MARK_NAME).stat().st_mode & 0o777 == 0o600
        assert is_alive(mark)
        # the same pid with another start time, or from another boot, is someone else
        assert not is_alive(replace(mark, start_ticks=mark.start_ticks + 1))
        assert not is_alive(replace(mark, boot_id="another-boot"))
        assert stop_family(replace(mark, start_ticks=mark.start_ticks + 1), grace_s=0.1)
        assert proc.poll() is None  # nothing was signalled
    finally:
        proc.kill()
        proc.wait()
    assert not is_alive(mark)
    clear_mark(tmp_path)
    assert read_mark(tmp_path) is None


def test_stop_family_takes_the_descendants_and_the_session_even_ignoring_sigterm(
    tmp_path: Path,
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", STUBBORN], stdout=subprocess.PIPE, start_new_session=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    family = {proc.pid} | _children(proc.pid)
    assert len(family) == 3
    run_dir = tmp_path / "job-3"
    run_dir.mkdir()
    write_mark(run_dir, job_id=3, pid=proc.pid, admitted_at_s=None)
    (tmp_path / "job-4").mkdir()  # no mark
    (tmp_path / "job-5").mkdir()
    (tmp_path / "job-5" / MARK_NAME).write_text(json.dumps({"pid": "x"}))  # not a mark
    [(found_dir, mark)] = find_marks(tmp_path)
    assert found_dir == run_dir and mark.pid == proc.pid
    started = time.monotonic()
    assert stop_family(mark, grace_s=0.3)
    proc.wait(timeout=5)
    assert not any(_alive(p) for p in family)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("token", ["t0k3n", ""])
def test_the_session_outliving_its_dead_leader_is_stopped_when_it_carries_the_token(
    tmp_path: Path, token: str
) -> None:
    # an unisolated job killed by its parent-death signal leaves its grandchild behind; once
    # the leader is gone, only a member carrying the run's token is taken for the run's
    leaver = (
        "import subprocess, sys, time; "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        "print('ready', flush=True); time.sleep(0.5)"
    )
    env = dict(os.environ, **({ENV_RUN_TOKEN: token} if token else {}))
    leader = subprocess.Popen(
        [sys.executable, "-c", leaver], stdout=subprocess.PIPE, start_new_session=True, env=env
    )
    assert leader.stdout is not None and leader.stdout.readline().strip() == b"ready"
    family = _children(leader.pid)
    write_mark(tmp_path, job_id=9, pid=leader.pid, admitted_at_s=None, run_token="t0k3n")
    mark = read_mark(tmp_path)
    assert mark is not None and mark.run_token == "t0k3n" and len(family) == 1
    leader.wait(timeout=10)  # the leader is gone (and reaped); its session is not
    assert all(_alive(p) for p in family)
    assert not is_alive(mark)
    try:
        assert has_family(mark) is bool(token)
        assert stop_family(mark, grace_s=0.3)
        assert any(_alive(p) for p in family) is not bool(token)
    finally:
        for pid in family:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
