"""A deployment with ``min_replicas: 0``: idle -> no replica; a request -> held while one
starts, then answered (issue 15: a deployment at 0 answered 404 ``unknown model``)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from _center import running_up

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ADMIN = "e2e-scale-zero-admin-key-0123456789"
FLEET = """\
name: scale-zero
servers:
  - {device: rngd, count: 1, cards_per_server: 2}
services:
  - {model: llama-3.1-8b, device: rngd, tp: 1, replicas_per_server: 1,
     min_replicas: 0, max_replicas: 2, autoscale: {idle_to_zero_s: 3}}
"""


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [int(p) for p in out.stdout.split()]


def test_idle_goes_to_zero_and_a_request_brings_a_replica_back(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NPUCENTER_")}
    env |= {"NPUCENTER_ADMIN_KEY": ADMIN, "NPUCENTER_JOB_RUNNER": "0"}
    admin = {"authorization": f"Bearer {ADMIN}"}
    args = ("--fleet", str(fleet), "--log-level", "warning")
    with running_up(tmp_path / "data", env, *args, log_path=tmp_path / "up.log") as up:
        deadline = time.monotonic() + 60
        while True:  # idle for idle_to_zero_s: the deployment goes to 0, its engine stops
            (dep,) = httpx.get(f"{up.url}/api/deployments", headers=admin).json()
            if dep["replicas"] == 0 and not _children(up.proc.pid):
                break
            assert time.monotonic() < deadline, up.log()
            time.sleep(0.3)
        models = httpx.get(f"{up.url}/v1/models", headers=admin).json()["data"]
        assert [m["id"] for m in models] == ["llama-3.1-8b"]  # still known at zero

        started = time.monotonic()
        resp = httpx.post(
            f"{up.url}/v1/chat/completions",
            headers=admin,
            json={
                "model": "llama-3.1-8b",
                "messages": [{"role": "user", "content": "wake up"}],
                "max_tokens": 4,
            },
            timeout=90,
        )
        held_s = time.monotonic() - started
        assert resp.status_code == 200, resp.text  # held while a replica started, then served
        assert resp.json()["usage"]["completion_tokens"] == 4
        print(f"held {held_s:.2f} s while a virtual replica started from zero")
        (dep,) = httpx.get(f"{up.url}/api/deployments", headers=admin).json()
        assert dep["replicas"] == 1
        assert len(_children(up.proc.pid)) == 1
