"""kill -9 of `npucenter up` while a tenant's job runs: the job does not outlive the center
unnoticed, and after a restart it runs once more, never twice at the same time.

The job ignores SIGTERM, leaves a grandchild running and appends `start` to a file in its work
dir when it starts and `done` when it ends (after the seconds in its `duration` file, 120 for
the first run). Sandboxed (bubblewrap), its whole pid namespace dies with the center
(`--die-with-parent`, SIGKILL as the parent-death signal); unisolated, its grandchild survives
the center and the restarted center stops it (the run's process mark) before it queues the job
again. Either way the file ends `start, start, done`: one run interrupted, one run complete.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from pathlib import Path

import httpx
import pytest
from _center import start_up, stop

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ADMIN = "orphan-admin-key-0123456789abcdef"
JOB = (
    "import os, signal, subprocess, sys, time; "
    "signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)', sys.argv[1]]); "
    "open('runs', 'a').write('start\\n'); "
    "time.sleep(float(open('duration').read()) if os.path.exists('duration') else 120.0); "
    "open('runs', 'a').write('done\\n')"
)


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    out, stack = set(), [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            out.add(child)
            stack.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
    except (OSError, IndexError):
        return False


def _tagged(tag: str) -> list[int]:
    """Live processes with ``tag`` in their command line."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if tag.encode() in cmdline.read_bytes().split(b"\0") and _alive(
                int(cmdline.parent.name)
            ):
                found.append(int(cmdline.parent.name))
        except (OSError, ValueError):
            continue
    return found


def _wait(condition, what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(0.1)


@pytest.mark.parametrize("isolation", ["bwrap", "none"])
def test_kill_9_of_the_center_leaves_no_job_running_twice(tmp_path: Path, isolation: str) -> None:
    if isolation == "bwrap" and shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NPUCENTER_")}
    env |= {
        "NPUCENTER_ADMIN_KEY": ADMIN,
        "NPUCENTER_VIRTUAL_FLEET": "0",
        "NPUCENTER_ADMISSION_INTERVAL_S": "0.5",
        "NPUCENTER_JOB_ISOLATION": isolation,
    }
    data = tmp_path / "data"
    tag = f"orphan-test-{tmp_path.name}-{os.getpid()}"  # on the job's grandchildren's argv
    up = start_up(data, env, log_path=tmp_path / "up.log")
    try:
        api = httpx.Client(base_url=up.url, headers={"Authorization": f"Bearer {ADMIN}"})
        api.post("/api/tenants", json={"name": "acme", "kind": "company"}).raise_for_status()
        r = api.post("/api/servers", json={"name": "gpu-1", "device_type": "h100", "num_cards": 2})
        r.raise_for_status()
        quota = {"tenant": "acme", "device_type": "h100", "nominal_cards": 2}
        api.put("/api/quotas", json=quota).raise_for_status()
        body = {"tenant": "acme", "name": "long", "kind": "preprocess", "device_type": "h100"}
        command = [sys.executable, "-c", JOB, tag]
        r = api.post("/api/jobs", json=body | {"num_cards": 1, "command": command})
        r.raise_for_status()
        job_id = r.json()["id"]
        work = data / "jobs" / f"job-{job_id}" / "work"
        _wait(lambda: (work / "runs").exists(), "the job's first start")
        family = _descendants(up.proc.pid)  # the job's processes (and the sandbox's)
        assert len(family) >= 2

        up.proc.send_signal(signal.SIGKILL)
        up.proc.wait(timeout=10)
        if isolation == "bwrap":  # the sandbox's pid namespace dies with the center
            _wait(lambda: not any(_alive(p) for p in family), "the sandbox dying", 10.0)
        else:  # the job itself was SIGKILLed (parent-death signal); its grandchild lives on
            assert any(_alive(p) for p in family)
        (work / "duration").write_text("0.5")  # the next run ends at once

        up = start_up(data, env, port=up.port, log_path=tmp_path / "up-again.log")
        api = httpx.Client(base_url=up.url, headers={"Authorization": f"Bearer {ADMIN}"})

        def finished() -> bool:
            return api.get(f"/api/jobs/{job_id}").json()["state"] in ("succeeded", "failed")

        _wait(finished, "the job's second run")
        assert not any(_alive(p) for p in family), "a process of the first run survived"
        job = api.get(f"/api/jobs/{job_id}").json()
        assert job["state"] == "succeeded" and job["num_preemptions"] == 1, job
        assert (work / "runs").read_text().split() == ["start", "start", "done"]
        if isolation == "none":
            assert "outlived that center" in up.log()
        # what the complete run left in its session went with it
        _wait(lambda: not _tagged(tag), "the second run's grandchild to be killed", 10.0)
    finally:
        stop(up.proc, sig=signal.SIGKILL)
        for pid in _tagged(tag):  # nothing of this test stays behind, even when it failed
            os.kill(pid, signal.SIGKILL)
