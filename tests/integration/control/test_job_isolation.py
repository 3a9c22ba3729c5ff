"""A tenant's job cannot take over the center (SQLite and PostgreSQL; issue 13, Critical).

Real jobs run through the real runner and sandbox (bubblewrap; skipped where it cannot run):
an attacker's command tries to read and write the store, the data directory, another
tenant's work dir and the server's environment, and reports what it reached; every attempt
must fail and the store must be unchanged. Where isolation is unavailable, jobs are refused
with a typed error unless the operator opts out.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from npucenter.api import create_app
from npucenter.api.runner import job_sandbox, make_job_runner
from npucenter.executors.sandbox import JobIsolation, Sandbox, SandboxPolicy, parse_job_limits
from npucenter.settings import Settings

PY = sys.executable
SECRET = "npc_server-secret-admin-key-0123456789"

# What the attacker tries; each entry: name -> Python statement (raises when denied).
ATTACK = r"""
import json, os, socket, sys
t = json.loads(sys.argv[1])
report = {"uid": os.getuid()}
def attempt(name, fn):
    try:
        out = fn()
        report[name] = "ALLOWED: " + repr(out)[:80]
    except Exception as exc:
        report[name] = "denied: " + type(exc).__name__
def env_leak():
    leaked = [k for k, v in os.environ.items() if t["secret"] in v or k.startswith("NPUCENTER_A")]
    leaked += [k for k in os.environ if k == "NPUCENTER_DATABASE_URL"]
    if leaked:
        return leaked
    raise LookupError("nothing")
def proc_environ():
    for pid in (t["server_pid"], 1):
        data = open(f"/proc/{pid}/environ", "rb").read()
        if t["secret"].encode() in data:
            return pid
    raise LookupError("no secret")
def db_connect():
    with socket.create_connection((t["db_host"], t["db_port"]), timeout=2) as s:
        return s.getpeername()
def write_db():
    with open(t["db_file"], "ab") as f:
        f.write(b"pwned")
    return "appended"
attempt("read_store", lambda: open(t["db_file"], "rb").read(16))
attempt("write_store", write_db)
attempt("reach_database", db_connect)
attempt("list_data_dir", lambda: os.listdir(t["data_dir"]))
attempt("write_data_dir", lambda: open(os.path.join(t["data_dir"], "pwned"), "w").write("x"))
attempt("read_other_job", lambda: open(t["other"]).read())
attempt("read_other_job_relative", lambda: open("../../job-%d/work/secret.txt" % t["victim"]).read())
attempt("server_env", env_leak)
attempt("server_proc_environ", proc_environ)
attempt("become_root", lambda: os.setuid(0))
attempt("write_system", lambda: open("/usr/pwned", "w").write("x"))
json.dump(report, open(os.environ["NPUCENTER_RESULT_PATH"], "w"))
"""


def _bwrap_problem() -> str | None:
    return Sandbox().unavailable_reason()


needs_bwrap = pytest.mark.skipif(
    _bwrap_problem() is not None, reason=f"job sandbox unavailable: {_bwrap_problem()}"
)


@pytest.fixture
def center(database_url, tmp_path, clock, admin_key, monkeypatch):
    # the server's own environment holds its secrets, as `npucenter up` would
    monkeypatch.setenv("NPUCENTER_ADMIN_KEY", SECRET)
    monkeypatch.setenv("NPUCENTER_DATABASE_URL", database_url)
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url, admin_key=admin_key)
    settings.ensure_data_dir()
    app = create_app(settings, now_s=clock.now_s, migrate=False)
    yield app
    app.state.control.db.dispose()


@pytest.fixture
def admin(center, admin_key):
    with TestClient(center, headers={"Authorization": f"Bearer {admin_key}"}) as client:
        assert (
            client.post(
                "/api/servers", json={"name": "gpu-1", "device_type": "h100", "num_cards": 8}
            ).status_code
            == 201
        )
        yield client


def _tenant(admin, app, name):
    assert admin.post("/api/tenants", json={"name": name, "kind": "company"}).status_code == 201
    body = {"tenant": name, "device_type": "h100", "nominal_cards": 4}
    assert admin.put("/api/quotas", json=body).status_code == 200
    key = admin.post("/api/keys", json={"tenant": name}).json()["key"]
    return TestClient(app, headers={"Authorization": f"Bearer {key}"})


def _submit(client, command):
    body = {"name": "j", "kind": "preprocess", "device_type": "h100", "num_cards": 1}
    r = client.post("/api/jobs", json=body | {"command": command})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _run_to_end(runner, job_id):
    assert asyncio.run(runner.tick()).started == [job_id]
    assert asyncio.run(runner.wait_exited(job_id, 60.0)) is not None
    asyncio.run(runner.tick())


def _store_snapshot(admin):
    return {
        "keys": admin.get("/api/keys").json(),
        "tenants": admin.get("/api/tenants").json(),
    }


def _targets(center, database_url, other: Path, victim: int) -> dict:
    settings = center.state.control.settings
    if settings.is_sqlite:
        db_file, host, port = database_url.split(":///", 1)[1], "127.0.0.1", 9
    else:
        parts = urlsplit(database_url.replace("+psycopg", ""))
        db_file, host, port = str(settings.data_dir / "npucenter.db"), parts.hostname, parts.port
    return {
        "secret": SECRET,
        "server_pid": os.getpid(),
        "db_file": db_file,
        "db_host": host,
        "db_port": port or 5432,
        "data_dir": str(settings.data_dir),
        "other": str(other),
        "victim": victim,
    }


@needs_bwrap
def test_a_tenant_job_cannot_reach_the_store_the_data_dir_other_jobs_or_the_env(
    admin, center, database_url
):
    runner = make_job_runner(center.state.control, grace_s=1.0)
    try:
        victim = _tenant(admin, center, "victim")
        mallory = _tenant(admin, center, "mallory")
        secret_job = _submit(
            victim, [PY, "-c", "open('secret.txt', 'w').write('the victim s data')"]
        )
        _run_to_end(runner, secret_job)
        other = runner.work_dir / f"job-{secret_job}" / "work" / "secret.txt"
        assert other.read_text() == "the victim s data"  # it is there, on the host

        before = _store_snapshot(admin)
        db_bytes = None
        if center.state.control.settings.is_sqlite:
            db_bytes = Path(database_url.split(":///", 1)[1]).stat().st_size
        targets = _targets(center, database_url, other, secret_job)
        attack = _submit(mallory, [PY, "-c", ATTACK, json.dumps(targets)])
        _run_to_end(runner, attack)

        job = mallory.get(f"/api/jobs/{attack}").json()
        assert job["state"] == "succeeded", job
        report = mallory.get(f"/api/jobs/{attack}/result").json()
        reached = {k: v for k, v in report.items() if k != "uid" and not v.startswith("denied")}
        assert reached == {}, report
        assert len(report) == 12  # every attempt ran and was reported
        if os.geteuid() == 0:
            assert report["uid"] not in (0, os.getuid())  # a uid of its own
        assert _store_snapshot(admin) == before
        assert not (Path(targets["data_dir"]) / "pwned").exists()
        if db_bytes is not None:
            assert Path(targets["db_file"]).read_bytes()[-5:] != b"pwned"
    finally:
        asyncio.run(runner.shutdown())


@needs_bwrap
def test_a_result_file_linked_to_the_store_is_not_followed(admin, center, database_url):
    runner = make_job_runner(center.state.control, grace_s=1.0)
    try:
        mallory = _tenant(admin, center, "mallory")
        target = str(center.state.control.settings.data_dir / "npucenter.db")
        script = f"import os; os.symlink({target!r}, 'result.json')"
        job_id = _submit(mallory, [PY, "-c", script])
        _run_to_end(runner, job_id)
        job = mallory.get(f"/api/jobs/{job_id}").json()
        assert job["state"] == "succeeded" and job["has_result"] is False
        assert "result file ignored" in (job["log_tail"] or "")
    finally:
        asyncio.run(runner.shutdown())


@needs_bwrap
def test_limits_hold_memory_and_disk(admin, center, tmp_path):
    policy = SandboxPolicy(limits=parse_job_limits("memory_gb=0.5,disk_gb=0.002"))
    sandbox = Sandbox(policy, hidden=[center.state.control.settings.data_dir])
    runner = make_job_runner(center.state.control, grace_s=1.0, sandbox=sandbox)
    try:
        acme = _tenant(admin, center, "acme")
        hog = _submit(acme, [PY, "-c", "b = bytearray(1024**3)"])
        _run_to_end(runner, hog)
        job = acme.get(f"/api/jobs/{hog}").json()
        assert job["state"] == "failed" and "MemoryError" in job["log_tail"]

        filler = (
            "import time\nopen('fill', 'wb').write(b'x' * 8 * 1024**2)\n"
            "open('filled', 'w').close()\ntime.sleep(60)"
        )
        job_id = _submit(acme, [PY, "-c", filler])
        assert asyncio.run(runner.tick()).started == [job_id]
        marker = runner.work_dir / f"job-{job_id}" / "work" / "filled"
        for _ in range(300):  # bounded: the job writes 8 MB, then the next tick sees it
            if marker.exists():
                break
            asyncio.run(asyncio.sleep(0.05))
        report = asyncio.run(runner.tick())  # over disk_gb: killed, and its exit recorded
        assert report.finished == [job_id]
        job = acme.get(f"/api/jobs/{job_id}").json()
        assert job["state"] == "failed" and job["failure_code"] == "limit_exceeded", job
    finally:
        asyncio.run(runner.shutdown())


def test_without_isolation_tenant_jobs_are_refused_unless_the_operator_opts_out(admin, center):
    data_dir = center.state.control.settings.data_dir
    broken = Sandbox(hidden=[data_dir], bwrap="/nonexistent/bwrap")
    runner = make_job_runner(center.state.control, grace_s=1.0, sandbox=broken)
    acme = _tenant(admin, center, "acme")
    job_id = _submit(acme, [PY, "-c", "print('hi')"])
    try:
        report = asyncio.run(runner.tick())
        assert report.refused == [job_id] and report.started == []
        job = acme.get(f"/api/jobs/{job_id}").json()
        assert job["state"] == "failed" and job["failure_code"] == "not_supported"
        assert "NPUCENTER_JOB_ISOLATION=none" in job["failure_reason"]
    finally:
        asyncio.run(runner.shutdown())

    opted_out = Sandbox(SandboxPolicy(isolation=JobIsolation.NONE), bwrap="/nonexistent/bwrap")
    runner = make_job_runner(center.state.control, grace_s=1.0, sandbox=opted_out)
    script = "import os; print('key', os.environ.get('NPUCENTER_ADMIN_KEY'))"
    job_id = _submit(acme, [PY, "-c", script])
    try:
        _run_to_end(runner, job_id)
        job = acme.get(f"/api/jobs/{job_id}").json()
        # unisolated, yet the environment is still allow-listed
        assert job["state"] == "succeeded" and "key None" in job["log_tail"]
    finally:
        asyncio.run(runner.shutdown())


def test_settings_build_the_sandbox_that_hides_the_data_dir_and_the_store(tmp_path):
    settings = Settings.from_env(
        {
            "NPUCENTER_JOB_ISOLATION": "bwrap",
            "NPUCENTER_JOB_NETWORK": "host",
            "NPUCENTER_JOB_LIMITS": "cpu_s=60,memory_gb=off",
            "NPUCENTER_JOB_ENV_ALLOW": "HF_HOME",
            "NPUCENTER_DATABASE_URL": f"sqlite:///{tmp_path / 'db' / 'x.db'}",
        },
        data_dir=tmp_path / "data",
    )
    sandbox = job_sandbox(settings)
    assert sandbox.policy.isolation == "bwrap" and sandbox.policy.network == "host"
    assert sandbox.policy.limits.cpu_s == 60 and sandbox.policy.limits.memory_gb is None
    assert sandbox.policy.env_allow == ("HF_HOME",)
    assert set(sandbox.hidden) == {(tmp_path / "data").resolve(), (tmp_path / "db").resolve()}


def test_required_isolation_that_cannot_run_stops_the_center_from_starting(tmp_path, monkeypatch):
    from fastapi import FastAPI

    from npucenter.api.runner import install_job_runner
    from npucenter.errors import NotSupportedError
    from npucenter.executors import sandbox as sandbox_module

    monkeypatch.setattr(sandbox_module.shutil, "which", lambda name: None)  # no bwrap here
    settings = Settings(data_dir=tmp_path, job_isolation="bwrap")
    app = create_app(settings)
    try:
        with pytest.raises(NotSupportedError) as info:
            install_job_runner(app, settings)
        assert "bubblewrap" in info.value.reason
        # auto (the default): the center starts; jobs are refused later, one by one
        install_job_runner(app, Settings(data_dir=tmp_path))
        assert isinstance(app, FastAPI) and app.state.job_runner.sandbox.unavailable_reason()
    finally:
        app.state.control.db.dispose()
