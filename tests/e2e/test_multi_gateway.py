"""Two `npucenter up` on one PostgreSQL: one budget, one engine per replica, a leader that can die.

Issue 15: with two processes behind a load balancer a tenant's token rate doubled and each
process started its own engine for the same placed replica. Here the same tenant (10 tok/s)
calls both gateways alternately for a few seconds; what both served together stays within what
one bucket allows (its burst plus its rate over the time) plus one lease; only the leader runs
the engine; killed, the follower takes over and serves.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from _center import running_up, stop

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.slow]

ADMIN = "e2e-multigw-admin-key-0123456789"
FLEET = """\
name: multigw
servers:
  - {device: rngd, count: 1, cards_per_server: 2}
services:
  - {model: llama-3.1-8b, device: rngd, tp: 1, replicas_per_server: 1}
"""
RATE = 10.0  # the tenant's tokens per second
BURST = RATE * 10.0  # policy.quota.DEFAULT_TOKEN_BURST_S
LEASE = RATE * 1.0  # gateway.lease.DEFAULT_LEASE_S of the rate


@pytest.fixture
def database_url() -> Iterator[str]:
    base = os.environ.get("NPUCENTER_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("NPUCENTER_TEST_POSTGRES_URL is not set (scripts/pg-test-server.sh run -- ...)")
    import psycopg

    name = f"npc_e2e_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield base.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [int(p) for p in out.stdout.split()]


def _chat(url: str, key: str, max_tokens: int = 4) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={
            "model": "llama-3.1-8b",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": max_tokens,
        },
        timeout=30,
    )


def _until_served(url: str, key: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        resp = _chat(url, key)
        if resp.status_code == 200:
            return
        assert resp.status_code == 503, resp.text
        assert time.monotonic() < deadline, f"{url} never served: {resp.text}"
        time.sleep(0.3)


def test_two_gateways_share_one_budget_one_engine_and_a_leader(
    database_url: str, tmp_path: Path
) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NPUCENTER_")}
    env |= {
        "NPUCENTER_DATABASE_URL": database_url,
        "NPUCENTER_ADMIN_KEY": ADMIN,
        "NPUCENTER_JOB_RUNNER": "0",
    }
    args = ("--fleet", str(fleet), "--log-level", "info")
    admin = {"authorization": f"Bearer {ADMIN}"}
    with running_up(tmp_path / "a", env, *args, log_path=tmp_path / "a.log") as a:
        _until_served(a.url, ADMIN)  # a leads: it registered the fleet and runs the engine
        with running_up(
            tmp_path / "b", env, *args, log_path=tmp_path / "b.log", sig=signal.SIGKILL
        ) as b:
            _until_served(b.url, ADMIN)  # b serves a's replica (the pool a published)
            # one engine for the one placed replica: a's child, none of b's
            assert len(_children(a.proc.pid)) == 1, a.log()
            assert _children(b.proc.pid) == [], b.log()
            assert "another process leads the center" in b.log()

            httpx.post(
                f"{a.url}/api/tenants", headers=admin, json={"name": "acme", "kind": "company"}
            ).raise_for_status()
            httpx.put(
                f"{a.url}/api/quotas",
                headers=admin,
                json={
                    "tenant": "acme",
                    "device_type": "rngd",
                    "nominal_cards": 0,
                    "tokens_per_s": RATE,
                },
            ).raise_for_status()
            key = httpx.post(f"{a.url}/api/keys", headers=admin, json={"tenant": "acme"}).json()[
                "key"
            ]

            served = {a.url: 0, b.url: 0}
            refused = 0
            start = time.monotonic()
            i = 0
            while time.monotonic() - start < 6.0:
                url = (a.url, b.url)[i % 2]
                i += 1
                resp = _chat(url, key)
                if resp.status_code == 200:
                    served[url] += resp.json()["usage"]["total_tokens"]
                else:
                    assert resp.status_code == 429, resp.text
                    refused += 1
            elapsed = time.monotonic() - start
            one_gateway = BURST + RATE * elapsed
            total = sum(served.values())
            print(
                f"served {served} in {elapsed:.1f} s, {refused} refused; bound {one_gateway:.0f}+{LEASE:.0f}"
            )
            assert refused > 0 and served[a.url] > 0 and served[b.url] > 0
            assert total <= one_gateway + LEASE, (served, elapsed)

            # the leader dies: the follower takes over, starts the engine and serves
            stop(a.proc, sig=signal.SIGKILL)
            deadline = time.monotonic() + 60
            while not _children(b.proc.pid):
                assert time.monotonic() < deadline, b.log()
                time.sleep(0.3)
            assert "this process leads the center" in b.log()
            _until_served(b.url, ADMIN)
            assert len(_children(b.proc.pid)) == 1


SCALED_FLEET = """\
name: multigw-zero
servers:
  - {device: rngd, count: 1, cards_per_server: 2}
services:
  - {model: llama-3.1-8b, device: rngd, tp: 1, replicas_per_server: 1,
     min_replicas: 0, max_replicas: 1, autoscale: {idle_to_zero_s: 3}}
"""


def test_a_follower_holds_a_request_at_zero_and_the_leader_starts_a_replica(
    database_url: str, tmp_path: Path
) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(SCALED_FLEET)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NPUCENTER_")}
    env |= {
        "NPUCENTER_DATABASE_URL": database_url,
        "NPUCENTER_ADMIN_KEY": ADMIN,
        "NPUCENTER_JOB_RUNNER": "0",
    }
    args = ("--fleet", str(fleet), "--log-level", "warning")
    admin = {"authorization": f"Bearer {ADMIN}"}
    with running_up(tmp_path / "a", env, *args, log_path=tmp_path / "a.log") as a:
        with running_up(tmp_path / "b", env, *args, log_path=tmp_path / "b.log") as b:
            deadline = time.monotonic() + 60
            while True:  # idle: the leader scales it to zero
                (dep,) = httpx.get(f"{a.url}/api/deployments", headers=admin).json()
                if dep["replicas"] == 0 and not _children(a.proc.pid):
                    break
                assert time.monotonic() < deadline, a.log()
                time.sleep(0.3)
            time.sleep(1.5)  # the follower has read the pool the leader published
            resp = _chat(b.url, ADMIN)  # held by the follower; the leader sees it and starts one
            assert resp.status_code == 200, resp.text + b.log()
            assert len(_children(a.proc.pid)) == 1 and _children(b.proc.pid) == []
