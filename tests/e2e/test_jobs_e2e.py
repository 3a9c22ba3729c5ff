"""End to end: `npucenter up` runs a benchmark job and keeps its result; the CLI reads it back.

A live server on loopback (no virtual fleet), a stub OpenAI endpoint in this process, the CLI as
subprocesses. The job's command is `npucenter bench run ... --json $(NPUCENTER_RESULT_PATH)`;
`bench run --submit` attaches a result made outside the center to another job.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from _center import CLI, running_up

from npucenter.bench.stub import running_stub

pytestmark = pytest.mark.e2e


@pytest.fixture
def server(tmp_path: Path) -> Iterator[dict[str, str]]:
    """`npucenter up` with its job runner, a 0.5 s admission tick and a tariff; stopped after."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NPUCENTER_")}
    env |= {
        "NPUCENTER_VIRTUAL_FLEET": "0",
        "NPUCENTER_ADMISSION_INTERVAL_S": "0.5",
        "NPUCENTER_TARIFF": "h100=2.0,default=1.0",
        "NPUCENTER_JOB_NETWORK": "host",  # the benchmark job calls the stub endpoint
    }
    log_path = tmp_path / "server.log"
    with running_up(tmp_path / "data", env, log_path=log_path) as up:
        key = re.findall(r"admin key \(shown once, store it now\): (\S+)", up.log())
        yield {"url": up.url, "admin_key": key[0], "log": str(log_path)}


def _cli(server: dict[str, str], *args: str, key: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NPUCENTER_")}
    env |= {"NPUCENTER_URL": server["url"], "NPUCENTER_API_KEY": key, "COLUMNS": "200"}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=120)


def _json(result: subprocess.CompletedProcess[str]):
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _wait_state(server, job_id: int, key: str, states: set[str], timeout_s: float = 90.0):
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=server["url"], headers={"Authorization": f"Bearer {key}"}) as api:
        while True:
            job = api.get(f"/api/jobs/{job_id}").json()
            if job["state"] in states:
                return job
            assert time.monotonic() < deadline, f"job {job_id} stuck in {job['state']}"
            time.sleep(0.25)


def test_a_benchmark_job_runs_in_the_center_and_its_result_is_kept(server):
    admin = server["admin_key"]
    cli = lambda *a, key=admin: _cli(server, *a, key=key)  # noqa: E731
    _json(cli("tenant", "create", "vendor", "--kind", "company", "--json"))
    key = _json(cli("key", "create", "--tenant", "vendor", "--json"))["key"]
    _json(cli("fleet", "add", "gpu-1", "--device", "h100", "--cards", "2", "--json"))
    _json(cli("quota", "set", "--tenant", "vendor", "--device", "h100", "--nominal", "2", "--json"))

    with running_stub() as endpoint:
        bench = [
            sys.executable, "-m", "npucenter.cli.main", "bench", "run",
            "--endpoint", endpoint, "--model", "stub-model", "--scenario", "poisson",
            "--rate", "50", "--max-requests", "20", "--input-tokens", "16",
            "--output-tokens", "8", "--no-progress", "--json", "$(NPUCENTER_RESULT_PATH)",
        ]  # fmt: skip
        job = _json(
            cli("job", "submit", "pg", "--kind", "benchmark", "-d", "h100", "--json", "--",
                *bench, key=key)
        )  # fmt: skip
        done = _wait_state(server, job["id"], key, {"succeeded", "failed"})
        assert done["state"] == "succeeded", done
        assert done["exit_code"] == 0 and done["has_result"] is True

        result = _json(cli("job", "result", str(job["id"]), "--json", key=key))
        assert result["summary"]["requests"] == 20 and result["summary"]["completed"] == 20
        table = cli("job", "result", str(job["id"]), key=key)
        assert table.returncode == 0 and "output_tokens_per_s" in table.stdout

        # A result made outside the center goes up with --submit (an image job it cannot run).
        image = _json(
            cli("job", "submit", "vendor-image", "--kind", "benchmark", "-d", "h100",
                "--image", "registry.local/vendor-bench:1", "--json", key=key)
        )  # fmt: skip
        refused = _wait_state(server, image["id"], key, {"failed"})
        assert refused["failure_code"] == "not_supported"
        up = cli(*bench[3:-2], "--json", "-", "--submit", "--job", str(image["id"]), key=key)
        assert up.returncode == 0, up.stderr
    uploaded = _json(cli("job", "result", str(image["id"]), "--json", key=key))
    assert uploaded["summary"]["completed"] == 20

    rows = [r for r in _json(cli("usage", "list", "--json")) if r["kind"] == "job"]
    assert {r["ref"].split()[0] for r in rows} == {f"job:{job['id']}", f"job:{image['id']}"}
    ran = next(r for r in rows if r["ref"].startswith(f"job:{job['id']} "))
    assert ran["device_seconds"] > 0 and ran["energy_j"] > 0
    assert ran["cost_usd"] == pytest.approx(ran["device_seconds"] / 3600 * 2.0)
