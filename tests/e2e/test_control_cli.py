"""End to end: `npucenter up` as a real server on loopback, the CLI as subprocesses, on SQLite and
PostgreSQL. The issue-6 scenario through the script contract (NPUCENTER_URL, NPUCENTER_API_KEY,
--json documents, exit codes)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from _center import CLI, running_up

pytestmark = pytest.mark.e2e

PG_ADMIN_KEY = "npc_e2e_admin_key_0123456789"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None for the embedded SQLite default, else a fresh database on the test PostgreSQL."""
    if request.param == "sqlite":
        yield None
        return
    base = os.environ.get("NPUCENTER_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("NPUCENTER_TEST_POSTGRES_URL is not set (make test starts a server)")
    import psycopg

    name = f"npc_e2e_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield base.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def server(database_url: str | None, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A live `npucenter up` on 127.0.0.1; yields {"url", "admin_key", "data_dir"}; stops it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NPUCENTER_")}
    env["NPUCENTER_VIRTUAL_FLEET"] = "0"  # the control plane's test: launch no engine processes
    env["NPUCENTER_JOB_RUNNER"] = "0"  # an external executor's part: jobs stay admitted
    if database_url:
        env["NPUCENTER_DATABASE_URL"] = database_url
        env["NPUCENTER_ADMIN_KEY"] = PG_ADMIN_KEY  # the given key becomes the admin key
    with running_up(
        tmp_path / "data",
        env,
        "--log-level",
        "warning",
        log_path=tmp_path / "server.log",
        stop_timeout_s=15,
    ) as up:
        printed = re.findall(r"admin key \(shown once, store it now\): (\S+)", up.log())
        if database_url:
            assert printed == []  # NPUCENTER_ADMIN_KEY given: nothing generated or printed
            admin_key = PG_ADMIN_KEY
        else:
            assert len(printed) == 1
            admin_key = printed[0]
        yield {"url": up.url, "admin_key": admin_key, "data_dir": str(tmp_path / "data")}


def _cli(
    server: dict[str, str], *args: str, key: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NPUCENTER_")}
    env["NPUCENTER_URL"] = server["url"]
    env["NPUCENTER_API_KEY"] = key or server["admin_key"]
    env["COLUMNS"] = "200"
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=60)


def _json(result: subprocess.CompletedProcess[str]):
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_scenario_through_the_cli(server):
    cli = lambda *a, key=None: _cli(server, *a, key=key)  # noqa: E731
    # Set-up through the script contract: tenant create, key create --json.
    _json(cli("tenant", "create", "kaist", "--kind", "university", "--json"))
    kaist = _json(cli("key", "create", "--tenant", "kaist", "--json"))["key"]
    assert kaist.startswith("npc_")
    # The rest of the operator's set-up over HTTP (same API, fewer process starts).
    admin = httpx.Client(
        base_url=server["url"],
        timeout=30,
        headers={"Authorization": f"Bearer {server['admin_key']}"},
    )
    with admin:
        admin.post("/api/servers", json={"name": "rngd-1", "device_type": "rngd", "num_cards": 8})
        admin.post("/api/tenants", json={"name": "acme", "kind": "company"}).raise_for_status()
        acme = admin.post("/api/keys", json={"tenant": "acme"}).json()["key"]
        for tenant, nominal, prio in (("acme", 6, "production"), ("kaist", 2, "research")):
            admin.put(
                "/api/quotas",
                json={
                    "tenant": tenant,
                    "device_type": "rngd",
                    "nominal_cards": nominal,
                    "cohort": "center",
                    "priority_class": prio,
                },
            ).raise_for_status()

    # The university borrows idle NPUs for a research job.
    job = _json(
        cli(
            "job",
            "submit",
            "lora",
            "--kind",
            "finetune",
            "-d",
            "rngd",
            "--cards",
            "6",
            "--image",
            "lora:1",
            "--json",
            key=kaist,
        )
    )
    assert job["state"] == "admitted" and job["borrowed_cards"] == 4

    # A service that cannot fit is refused with its exit code; the one that fits reclaims.
    too_big = cli(
        "deploy", "create", "big", "-m", "llama-3.1-70b", "-d", "rngd", "--tp", "1", key=acme
    )
    assert too_big.returncode == 6 and too_big.stderr.startswith("error[does_not_fit]")
    dep = _json(
        cli(
            "deploy",
            "create",
            "chat",
            "-m",
            "llama-3.1-8b",
            "-d",
            "rngd",
            "--replicas",
            "4",
            "--json",
            key=acme,
        )
    )
    assert dep["num_placed_replicas"] == 4

    shown = _json(cli("job", "show", str(job["id"]), "--json", key=kaist))
    assert shown["state"] == "queued" and shown["num_preemptions"] == 1
    assert [e["to_state"] for e in shown["events"]][-2:] == ["preempted", "queued"]

    other = cli("job", "show", str(job["id"]), key=acme)  # another tenant's id
    assert other.returncode == 3 and other.stderr.startswith("error[not_found]")

    bad = cli("tenant", "list", key="npc_not_a_key")
    assert bad.returncode == 9 and bad.stderr.startswith("error[unauthenticated]")

    ledger = _json(cli("usage", "list", "--json"))
    assert [(r["tenant"], r["kind"]) for r in ledger] == [("kaist", "preemption")]
    assert ledger[0]["ref"].startswith(f"job:{job['id']}")


def test_db_upgrade_on_a_fresh_data_dir(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NPUCENTER_")}
    fresh = subprocess.run(
        [*CLI, "db", "upgrade", "--data-dir", str(tmp_path / "fresh"), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert fresh.returncode == 0, fresh.stderr
    doc = json.loads(fresh.stdout)
    assert doc["from"] is None and doc["to"] and (tmp_path / "fresh" / "npucenter.db").exists()
