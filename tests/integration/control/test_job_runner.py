"""The local job runner against the store (SQLite and PostgreSQL): jobs really run.

Ticks are driven by hand (``asyncio.run(runner.tick())``) with the control plane's fake clock,
so every state, exit code, log tail and ledger figure is deterministic; processes are real.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from npucenter.api import create_app
from npucenter.api.runner import job_runner_hook, make_job_runner
from npucenter.catalog import default_catalog
from npucenter.settings import Settings

PY = sys.executable
TARIFF = {"h100": 2.0, "rngd": 1.0}


def _descendants(pid: int) -> set[int]:
    """Host pids of every process under ``pid`` (a sandboxed job's pids are its namespace's)."""
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
    """Whether ``pid`` is a live process (a zombie counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


@pytest.fixture
def center(database_url, tmp_path, clock, admin_key):
    settings = Settings(
        data_dir=tmp_path,
        database_url=database_url,
        admin_key=admin_key,
        tariff_usd_per_device_hour=TARIFF,
    )
    app = create_app(settings, now_s=clock.now_s, migrate=False)
    yield app
    app.state.control.db.dispose()


@pytest.fixture
def admin(center, admin_key):
    with TestClient(center, headers={"Authorization": f"Bearer {admin_key}"}) as client:
        yield client


@pytest.fixture
def runner(center):
    runner = make_job_runner(center.state.control, grace_s=1.0)
    yield runner
    asyncio.run(runner.shutdown())


def _tenant(admin, app, name, *, nominal, priority="research", cohort=None, device="h100"):
    assert admin.post("/api/tenants", json={"name": name, "kind": "company"}).status_code == 201
    body = {
        "tenant": name,
        "device_type": device,
        "nominal_cards": nominal,
        "priority_class": priority,
        "cohort": cohort,
    }
    assert admin.put("/api/quotas", json=body).status_code == 200
    key = admin.post("/api/keys", json={"tenant": name}).json()["key"]
    return TestClient(app, headers={"Authorization": f"Bearer {key}"})


@pytest.fixture
def fleet(admin):
    r = admin.post("/api/servers", json={"name": "gpu-1", "device_type": "h100", "num_cards": 8})
    assert r.status_code == 201


def _submit(client, command, *, cards=1, kind="preprocess", image=None, name="j"):
    body = {"name": name, "kind": kind, "device_type": "h100", "num_cards": cards}
    body |= {"command": command, "image": image}
    r = client.post("/api/jobs", json=body)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _finish(runner, job_id, timeout_s=30.0):
    assert asyncio.run(runner.wait_exited(job_id, timeout_s)) is not None
    return asyncio.run(runner.tick())


def test_a_command_runs_to_succeeded_with_its_log_tail_and_a_priced_ledger_row(
    admin, center, runner, fleet, clock, monkeypatch
):
    monkeypatch.setenv("NPUCENTER_ADMIN_KEY", "must-not-leak-0123456789")
    acme = _tenant(admin, center, "acme", nominal=4)
    script = (
        "import os; e = os.environ; "
        "print('job', e['NPUCENTER_JOB_ID'], 'cards', e['NPUCENTER_CARDS'], "
        "'cuda', e['CUDA_VISIBLE_DEVICES'], 'admin', e.get('NPUCENTER_ADMIN_KEY'))"
    )
    job_id = _submit(acme, [PY, "-c", script], cards=2)
    assert acme.get(f"/api/jobs/{job_id}").json()["state"] == "admitted"

    report = asyncio.run(runner.tick())
    assert report.started == [job_id]
    assert acme.get(f"/api/jobs/{job_id}").json()["state"] == "running"
    clock.advance(90.0)
    report = _finish(runner, job_id)
    assert report.finished == [job_id]

    job = acme.get(f"/api/jobs/{job_id}").json()
    assert job["state"] == "succeeded" and job["exit_code"] == 0
    assert job["failure_code"] is None and job["server"] is None
    assert f"job {job_id} cards 0,1 cuda 0,1 admin None" in job["log_tail"]
    states = [e["to_state"] for e in acme.get(f"/api/jobs/{job_id}/events").json()]
    assert states == ["queued", "admitted", "running", "succeeded"]

    rows = [r for r in acme.get("/api/usage").json() if r["ref"].startswith(f"job:{job_id} ")]
    assert len(rows) == 1 and rows[0]["kind"] == "job"
    device_s = rows[0]["device_seconds"]
    assert device_s == pytest.approx(2 * 90.0)
    tdp_w = default_catalog().device("h100").tdp_w
    assert tdp_w and rows[0]["energy_j"] > 0
    assert rows[0]["energy_j"] == pytest.approx(device_s * tdp_w)
    assert rows[0]["cost_usd"] == pytest.approx(device_s / 3600 * TARIFF["h100"])
    assert runner.running_pids() == {}


def test_a_failing_command_fails_with_its_exit_code_and_output(admin, center, runner, fleet):
    acme = _tenant(admin, center, "acme", nominal=4)
    script = "import sys; print('bad input', file=sys.stderr); sys.exit(3)"
    job_id = _submit(acme, [PY, "-c", script])
    asyncio.run(runner.tick())
    _finish(runner, job_id)
    job = acme.get(f"/api/jobs/{job_id}").json()
    assert job["state"] == "failed" and job["exit_code"] == 3
    assert job["failure_code"] == "exit_code" and "bad input" in job["log_tail"]
    events = acme.get(f"/api/jobs/{job_id}/events").json()
    assert events[-1]["to_state"] == "failed"


def test_an_image_only_job_is_refused_and_a_missing_program_fails(admin, center, runner, fleet):
    acme = _tenant(admin, center, "acme", nominal=4)
    image_job = _submit(acme, [], image="registry.local/train:1")
    missing = _submit(acme, ["/nonexistent/npucenter-no-such-program"])
    report = asyncio.run(runner.tick())
    assert sorted(report.refused) == sorted([image_job, missing]) and report.started == []
    job = acme.get(f"/api/jobs/{image_job}").json()
    assert job["state"] == "failed" and job["failure_code"] == "not_supported"
    assert "image" in job["failure_reason"] and job["exit_code"] is None
    job = acme.get(f"/api/jobs/{missing}").json()
    assert job["state"] == "failed" and job["failure_code"] == "cannot_start"
    # their cards are free again
    assert admin.get("/api/servers/gpu-1").json()["num_free_cards"] == 8


def test_preemption_kills_the_process_group_and_requeues(admin, center, runner, fleet, tmp_path):
    # kaist borrows acme's idle cards; acme's production job reclaims them.
    kaist = _tenant(admin, center, "kaist", nominal=2, cohort="center")
    acme = _tenant(admin, center, "acme", nominal=6, priority="production", cohort="center")
    stubborn = (
        "import signal, subprocess, sys, time; "
        "signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
        "open('grandchild.pid', 'w').write(str(p.pid)); "
        "time.sleep(120)"
    )
    borrowed = _submit(kaist, [PY, "-c", stubborn], cards=6, kind="finetune")
    assert asyncio.run(runner.tick()).started == [borrowed]
    pid = runner.running_pids()[borrowed]
    pid_file = tmp_path / "jobs" / f"job-{borrowed}" / "work" / "grandchild.pid"
    for _ in range(500):  # bounded: the child writes its grandchild's pid (in its work dir)
        if pid_file.exists() and pid_file.read_text():
            break
        time.sleep(0.01)
    family = _descendants(pid)  # the sandbox, the job and its grandchild, as the host sees them
    assert _alive(pid) and len(family) >= 2 and all(_alive(p) for p in family)

    reclaim = _submit(acme, [PY, "-c", "print('mine')"], cards=4)
    assert acme.get(f"/api/jobs/{reclaim}").json()["state"] == "admitted"
    assert kaist.get(f"/api/jobs/{borrowed}").json()["state"] == "queued"

    report = asyncio.run(runner.tick())  # SIGTERM is ignored: SIGKILL after the grace
    assert report.killed == [borrowed] and reclaim in report.started
    assert not _alive(pid)
    for _ in range(200):  # the orphaned grandchild is reaped by init, bounded
        if not any(_alive(p) for p in family):
            break
        time.sleep(0.01)
    assert not any(_alive(p) for p in family)
    job = kaist.get(f"/api/jobs/{borrowed}").json()
    assert job["num_preemptions"] == 1 and job["state"] in ("queued", "admitted")
    rows = [r for r in kaist.get("/api/usage").json() if r["kind"] == "preemption"]
    assert len(rows) == 1 and rows[0]["energy_j"] >= 0 and rows[0]["cost_usd"] is not None


def test_cancel_kills_the_job_and_capacity_freed_admits_the_next(admin, center, runner, fleet):
    acme = _tenant(admin, center, "acme", nominal=8)
    first = _submit(acme, [PY, "-c", "import time; time.sleep(120)"], cards=8)
    second = _submit(acme, [PY, "-c", "print('second')"], cards=8)
    asyncio.run(runner.tick())
    pid = runner.running_pids()[first]
    assert acme.get(f"/api/jobs/{second}").json()["state"] == "queued"

    assert acme.post(f"/api/jobs/{first}/cancel").json()["state"] == "cancelled"
    report = asyncio.run(runner.tick())
    assert report.killed == [first] and report.started == [second]
    assert not _alive(pid)
    _finish(runner, second)
    assert acme.get(f"/api/jobs/{second}").json()["state"] == "succeeded"
    assert acme.get(f"/api/jobs/{first}").json()["state"] == "cancelled"


def test_a_benchmark_jobs_result_is_stored_and_retrievable(admin, center, runner, fleet):
    acme = _tenant(admin, center, "acme", nominal=4)
    other = _tenant(admin, center, "other", nominal=1)
    doc = {"kind": "run", "summary": {"requests": 3, "completed": 3, "output_tokens_per_s": 12.5}}
    script = f"import json, os; json.dump({doc!r}, open(os.environ['NPUCENTER_RESULT_PATH'], 'w'))"
    job_id = _submit(acme, [PY, "-c", script], kind="benchmark")
    assert acme.get(f"/api/jobs/{job_id}/result").status_code == 404
    asyncio.run(runner.tick())
    _finish(runner, job_id)
    job = acme.get(f"/api/jobs/{job_id}").json()
    assert job["state"] == "succeeded" and job["has_result"] is True
    assert acme.get(f"/api/jobs/{job_id}/result").json() == doc
    assert admin.get(f"/api/jobs/{job_id}/result").json() == doc
    assert other.get(f"/api/jobs/{job_id}/result").status_code == 404  # not its job
    assert other.put(f"/api/jobs/{job_id}/result", json={"x": 1}).status_code == 404


def test_a_result_can_be_uploaded_and_replaced(admin, center, fleet):
    acme = _tenant(admin, center, "acme", nominal=4)
    job_id = _submit(acme, [PY, "-c", "pass"], kind="benchmark")
    r = acme.put(f"/api/jobs/{job_id}/result", json={"summary": {"completed": 1}})
    assert r.status_code == 200 and r.json()["has_result"] is True
    acme.put(f"/api/jobs/{job_id}/result", json={"summary": {"completed": 2}})
    assert acme.get(f"/api/jobs/{job_id}/result").json() == {"summary": {"completed": 2}}
    r = acme.put(f"/api/jobs/{job_id}/result", json=[1, 2])
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"


def test_a_bad_result_file_is_noted_and_the_run_still_counts(admin, center, runner, fleet):
    acme = _tenant(admin, center, "acme", nominal=4)
    script = "import os; open(os.environ['NPUCENTER_RESULT_PATH'], 'w').write('{not json')"
    job_id = _submit(acme, [PY, "-c", script], kind="benchmark")
    asyncio.run(runner.tick())
    _finish(runner, job_id)
    job = acme.get(f"/api/jobs/{job_id}").json()
    assert job["state"] == "succeeded" and job["has_result"] is False
    assert "result file ignored" in job["log_tail"]


def test_shutdown_kills_and_requeues_and_a_restart_recovers(admin, center, runner, fleet):
    acme = _tenant(admin, center, "acme", nominal=4)
    job_id = _submit(acme, [PY, "-c", "import time; time.sleep(120)"])
    asyncio.run(runner.tick())
    pid = runner.running_pids()[job_id]
    assert asyncio.run(runner.shutdown()) == [job_id]
    assert not _alive(pid)
    job = acme.get(f"/api/jobs/{job_id}").json()
    assert job["state"] in ("queued", "admitted") and job["num_preemptions"] == 1

    # A center killed outright leaves the job running in the store: the next runner requeues it.
    again = make_job_runner(center.state.control, grace_s=1.0)
    asyncio.run(again.tick())
    orphan_pid = again.running_pids()[job_id]
    again.kill_all_now()  # what the atexit hook does when the server dies
    assert not _alive(orphan_pid)
    assert acme.get(f"/api/jobs/{job_id}").json()["state"] == "running"
    third = make_job_runner(center.state.control, grace_s=1.0)
    assert asyncio.run(third.recover()) == [job_id]
    assert acme.get(f"/api/jobs/{job_id}").json()["num_preemptions"] == 2
    asyncio.run(third.shutdown())


@pytest.mark.parametrize("isolation", ["bwrap", "none"])
def test_a_restarted_runner_stops_what_a_dead_one_left_running_then_runs_it_once(
    admin, center, fleet, isolation
):
    # A center that dies without stopping its job (the kernel's parent-death signal lost, as
    # under a setuid bubblewrap): the job ignores SIGTERM, has a grandchild in its own session,
    # and appends to a file each time it starts and when it ends.
    if isolation == "bwrap" and shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed")
    from npucenter.api.runner import job_sandbox

    control = center.state.control
    settings = Settings(
        data_dir=control.settings.data_dir,
        database_url=control.settings.database_url,
        job_isolation=isolation,
    )
    sandbox = lambda: job_sandbox(settings)  # noqa: E731
    acme = _tenant(admin, center, "acme", nominal=4)
    script = (
        "import signal, subprocess, sys, time; "
        "signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)', sys.argv[1]]); "
        "open('runs', 'a').write('start\\n'); "
        "time.sleep(float(open('duration').read())); "
        "open('runs', 'a').write('done\\n')"
    )
    tag = f"orphan-{isolation}-{os.getpid()}-{control.settings.data_dir.name}"
    job_id = _submit(acme, [PY, "-c", script, tag])
    first = make_job_runner(control, grace_s=0.5, sandbox=sandbox())
    work = control.settings.data_dir / "jobs" / f"job-{job_id}" / "work"
    work.mkdir(parents=True)
    (work / "duration").write_text("120")
    assert asyncio.run(first.tick()).started == [job_id]
    pid = first.running_pids()[job_id]
    _wait_for(lambda: (work / "runs").exists())
    family = {pid} | _descendants(pid)  # the sandbox (if any), the job, its grandchild
    assert len(family) >= 2
    first._runs.clear()  # the center dies: nothing stops its job, the store says running
    assert all(_alive(p) for p in family)
    assert acme.get(f"/api/jobs/{job_id}").json()["state"] == "running"

    (work / "duration").write_text("0.2")  # the next run ends at once
    again = make_job_runner(control, grace_s=0.5, sandbox=sandbox())
    try:
        assert asyncio.run(again.recover()) == [job_id]
        assert not any(_alive(p) for p in family)  # the whole family, before the job is queued
        assert acme.get(f"/api/jobs/{job_id}").json()["num_preemptions"] == 1
        assert asyncio.run(again.tick()).started == [job_id]
        _finish(again, job_id)
    finally:
        asyncio.run(again.shutdown())
    job = acme.get(f"/api/jobs/{job_id}").json()
    assert job["state"] == "succeeded", job
    assert (work / "runs").read_text().split() == ["start", "start", "done"]
    assert not (work.parent / "process.json").exists()
    assert not _tagged(tag)  # the second run's grandchild went with it


def _tagged(tag: str) -> list[int]:
    """Live processes with ``tag`` in their command line."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            pid = int(cmdline.parent.name)
            if tag.encode() in cmdline.read_bytes().split(b"\0") and _alive(pid):
                found.append(pid)
        except (OSError, ValueError):
            continue
    return found


def _wait_for(condition, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_the_server_hook_runs_jobs_as_they_are_submitted(database_url, tmp_path, admin_key):
    settings = Settings(
        data_dir=tmp_path,
        database_url=database_url,
        admin_key=admin_key,
        tariff_usd_per_device_hour=TARIFF,
    )
    app = create_app(settings, migrate=False)
    runner = make_job_runner(app.state.control, interval_s=0.2, grace_s=1.0)
    app.state.lifespan_hooks.append(job_runner_hook(runner))
    with TestClient(app, headers={"Authorization": f"Bearer {admin_key}"}) as admin:
        admin.post("/api/servers", json={"name": "gpu-1", "device_type": "h100", "num_cards": 8})
        acme = _tenant(admin, app, "acme", nominal=4)
        script = "import json; json.dump({'ok': True}, open('out.json', 'w'))"  # in its work dir
        job_id = _submit(acme, [PY, "-c", script])
        out = tmp_path / "jobs" / f"job-{job_id}" / "work" / "out.json"
        sleeper = _submit(acme, [PY, "-c", "import time; time.sleep(120)"])
        state = None
        for _ in range(300):  # bounded: about 30 s
            state = acme.get(f"/api/jobs/{job_id}").json()["state"]
            sleeper_state = acme.get(f"/api/jobs/{sleeper}").json()["state"]
            started = sleeper in runner.running_pids()
            if state == "succeeded" and sleeper_state == "running" and started:
                break
            time.sleep(0.1)
        assert state == "succeeded" and json.loads(out.read_text()) == {"ok": True}
        pid = runner.running_pids()[sleeper]
    # leaving the app stops the runner: the sleeper is killed and queued again
    assert not _alive(pid)
    with app.state.control.tx() as repo:
        assert repo.get_job(sleeper).state in ("queued", "admitted")
    app.state.control.db.dispose()
    assert os.environ.get("NPUCENTER_JOB_ID") is None


class _FakeTelemetry:
    """Two H100 cards at 300 W each (what NVML would report on this node)."""

    name = "fake"

    async def discover(self):
        return ()

    async def sample(self):
        from npucenter.telemetry import PowerSample

        return tuple(
            PowerSample(source_id=f"gpu{i}", device_type="h100", power_w=300.0) for i in (0, 1)
        )


def test_measured_power_of_the_jobs_cards_replaces_the_model(admin, center, fleet, tmp_path):
    from npucenter.clock import FakeClock

    acme = _tenant(admin, center, "acme", nominal=4)
    script = "import os, time\nwhile not os.path.exists('go'): time.sleep(0.01)"
    job_id = _submit(acme, [PY, "-c", script], cards=2)
    go = tmp_path / "jobs" / f"job-{job_id}" / "work" / "go"  # the job's work dir, from outside
    monotonic = FakeClock(100.0)
    runner = make_job_runner(
        center.state.control, grace_s=1.0, telemetry=_FakeTelemetry(), clock=monotonic
    )
    try:
        assert asyncio.run(runner.tick()).started == [job_id]
        monotonic.advance(10.0)
        asyncio.run(runner.tick())  # 2 cards x 300 W x 10 s
        go.write_text("")
        monotonic.advance(5.0)
        _finish(runner, job_id)  # + 2 x 300 W x 5 s, then the exit is recorded
    finally:
        asyncio.run(runner.shutdown())
    rows = [r for r in acme.get("/api/usage").json() if r["ref"].startswith(f"job:{job_id} ")]
    assert acme.get(f"/api/jobs/{job_id}").json()["state"] == "succeeded"
    assert len(rows) == 1 and rows[0]["energy_j"] == pytest.approx(600.0 * 15.0)


def test_a_job_waits_while_an_engine_still_holds_its_cards(admin, center, fleet):
    # admission freed a replica's cards in the store; its engine is still stopping
    held = {("gpu-1", card) for card in range(8)}
    runner = make_job_runner(center.state.control, grace_s=1.0, busy_cards=lambda: set(held))
    acme = _tenant(admin, center, "acme", nominal=4)
    job_id = _submit(acme, [PY, "-c", "print('mine')"])
    try:
        report = asyncio.run(runner.tick())
        assert report.waiting == [job_id] and report.started == []
        assert acme.get(f"/api/jobs/{job_id}").json()["state"] == "admitted"
        held.clear()  # the engine is gone
        assert asyncio.run(runner.tick()).started == [job_id]
    finally:
        asyncio.run(runner.shutdown())
