"""`bench run --scenario mlperf-*` speaks the same scenario names as `simulate` (against the stub)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from npucenter.cli.main import app
from npucenter.workload.mlperf import mlperf_scenario

runner = CliRunner()


def _run(url: str, out, *args: str):
    argv = ["bench", "run", "--endpoint", url, "--model", "stub-model", *args, "--no-progress"]
    return runner.invoke(app, [*argv, "--json", str(out)])


def test_server_preset_is_poisson_at_the_rate_with_the_mlperf_limits(stub_url, tmp_path):
    out = tmp_path / "s.json"
    res = _run(stub_url, out, "--scenario", "mlperf-server", "--rate", "40", "--max-requests", "8")
    assert res.exit_code == 0, res.output
    sc = json.loads(out.read_text())["scenario"]
    limits = mlperf_scenario("server").slo
    assert sc["arrival"] == "poisson" and sc["rate_rps"] == 40
    assert sc["slo_ttft_s"] == limits.ttft_s and sc["slo_tpot_s"] == limits.tpot_s


def test_offline_preset_sends_every_query_at_once(stub_url, tmp_path):
    out = tmp_path / "o.json"
    res = _run(stub_url, out, "--scenario", "mlperf-offline", "--max-requests", "6")
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["scenario"]["arrival"] == "concurrency" and doc["scenario"]["concurrency"] == 6
    assert doc["summary"]["completed"] == 6
    bad = _run(stub_url, tmp_path / "x.json", "--scenario", "mlperf-offline")
    assert bad.exit_code == 2
