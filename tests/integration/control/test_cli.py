"""The CLI over the API (in process): --json documents, tables, exit codes scripts rely on."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from npucenter.cli import calls, control
from npucenter.cli.client import Client
from npucenter.cli.main import app as cli_app


@pytest.fixture
def backend() -> str:
    """The CLI talks HTTP; the backend is covered elsewhere, so SQLite only here."""
    return "sqlite"


@pytest.fixture
def cli(anonymous, admin_key, monkeypatch):
    """``cli(*args, key=admin_key)`` runs the CLI against the in-process app; returns the result."""
    runner = CliRunner()
    monkeypatch.setattr(control.console, "width", 200)

    def run(*args: str, key: str | None = None):
        key = key or admin_key
        client = lambda: Client("http://testserver", key, http=anonymous)  # noqa: E731
        monkeypatch.setattr(calls, "_api", client)  # the shared request helpers
        monkeypatch.setattr(control, "_api", client)  # commands that open one client themselves
        return runner.invoke(cli_app, list(args))

    return run


def _json(result):
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_scripted_session(cli):
    tenant = _json(cli("tenant", "create", "kaist", "--kind", "university", "--json"))
    assert tenant["name"] == "kaist" and tenant["kind"] == "university"
    key = _json(cli("key", "create", "--tenant", "kaist", "--json"))["key"]
    assert key.startswith("npc_")
    assert (
        _json(cli("fleet", "add", "rngd-1", "--device", "rngd", "--cards", "4", "--json"))[
            "num_cards"
        ]
        == 4
    )
    quota = _json(
        cli(
            "quota",
            "set",
            "--tenant",
            "kaist",
            "--device",
            "rngd",
            "--nominal",
            "2",
            "--cohort",
            "center",
            "--json",
        )
    )
    assert quota["nominal_cards"] == 2 and quota["cohort"] == "center"
    job = _json(
        cli(
            "job",
            "submit",
            "ft",
            "--kind",
            "finetune",
            "-d",
            "rngd",
            "--cards",
            "2",
            "--json",
            "--",
            "python",
            "train.py",
            key=key,
        )
    )
    assert job["command"] == ["python", "train.py"] and job["state"] == "admitted"
    shown = _json(cli("job", "show", str(job["id"]), "--json", key=key))
    assert [e["to_state"] for e in shown["events"]] == ["queued", "admitted"]
    table = cli("job", "list", key=key)
    assert table.exit_code == 0 and "ft" in table.stdout and "admitted" in table.stdout
    whoami = _json(cli("tenant", "list", "--json", key=key))
    assert [t["name"] for t in whoami] == ["kaist"]


@pytest.mark.parametrize(
    ("args", "code", "exit_code"),
    [
        (("tenant", "create", "x", "--kind", "zoo"), "invalid_request", 2),
        (("tenant", "show", "nobody"), "not_found", 3),
        (
            ("quota", "set", "--tenant", "x", "--device", "rngd", "--nominal", "-1"),
            "invalid_request",
            2,
        ),
        (("fleet", "add", "s", "--device", "tpu9", "--cards", "1"), "not_found", 3),
        (("job", "show", "42"), "not_found", 3),
    ],
)
def test_errors_print_one_line_and_exit_with_the_code(cli, args, code, exit_code):
    result = cli(*args)
    assert result.exit_code == exit_code
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error[{code}]")


def test_duplicate_and_unauthenticated_exit_codes(cli):
    assert cli("tenant", "create", "a", "--kind", "company").exit_code == 0
    dup = cli("tenant", "create", "a", "--kind", "company")
    assert dup.exit_code == 4 and "error[conflict]" in dup.stderr
    bad = cli("tenant", "list", key="npc_nope")
    assert bad.exit_code == 9 and "error[unauthenticated]" in bad.stderr


def test_job_result_and_show_print_what_the_run_left(cli, tmp_path):
    cli("tenant", "create", "acme", "--kind", "company")
    cli("fleet", "add", "gpu-1", "--device", "h100", "--cards", "2")
    cli("quota", "set", "--tenant", "acme", "--device", "h100", "--nominal", "2")
    job = _json(
        cli(
            "job", "submit", "bench", "--kind", "benchmark", "-d", "h100", "--tenant", "acme",
            "--json", "--", "npucenter", "bench", "run",
        )
    )  # fmt: skip
    missing = cli("job", "result", str(job["id"]))
    assert missing.exit_code == 3  # not found: no result yet
    doc = {
        "summary": {"completed": 5, "errors": 0, "ttft_s": {"mean": 0.1, "p50": 0.1, "p99": 0.2}}
    }
    with control._api() as api:  # the fixture's client of the in-process app
        api.put(f"/api/jobs/{job['id']}/result", doc)
    assert _json(cli("job", "result", str(job["id"]), "--json")) == doc
    out = tmp_path / "r.json"
    table = cli("job", "result", str(job["id"]), "--output", str(out))
    assert table.exit_code == 0 and "completed" in table.stdout and "p99 0.2" in table.stdout
    assert json.loads(out.read_text()) == doc
    shown = cli("job", "show", str(job["id"]))
    assert shown.exit_code == 0 and f"npucenter job result {job['id']}" in shown.stdout


def test_delete_commands_print_what_they_removed(cli):
    _json(cli("tenant", "create", "acme", "--kind", "company", "--json"))
    quota = _json(
        cli("quota", "set", "--tenant", "acme", "--device", "h100", "--nominal", "1", "--json")
    )
    assert _json(cli("quota", "delete", str(quota["id"]), "--json")) == {"deleted": quota["id"]}
    assert _json(cli("quota", "list", "--json")) == []
    _json(cli("fleet", "add", "h100-9", "--device", "h100", "--cards", "2", "--json"))
    removed = cli("fleet", "remove", "h100-9")
    assert removed.exit_code == 0 and "removed" in removed.stdout and "h100-9" in removed.stdout
    assert _json(cli("fleet", "list", "--json")) == []
    gone = cli("quota", "delete", str(quota["id"]), "--json")
    assert gone.exit_code != 0  # a second delete is an error, not a silent success


def test_deploy_autoscale_sets_bounds_by_name(cli):
    _json(cli("tenant", "create", "lab", "--kind", "university", "--json"))
    _json(cli("fleet", "add", "rngd-0", "--device", "rngd", "--cards", "2", "--json"))
    _json(cli("quota", "set", "--tenant", "lab", "--device", "rngd", "--nominal", "2", "--json"))
    args = ("deploy", "create", "chat", "-m", "llama-3.1-8b", "-d", "rngd", "--tenant", "lab")
    made = _json(
        cli(*args, "--min-replicas", "1", "--max-replicas", "2", "--idle-s", "30", "--json")
    )
    assert (made["min_replicas"], made["idle_to_zero_s"]) == (1, 30.0)
    doc = _json(cli("deploy", "autoscale", "chat", "--min", "0", "--max", "2", "--idle-s", "60",
                    "--json"))  # fmt: skip
    assert (doc["min_replicas"], doc["max_replicas"], doc["idle_to_zero_s"]) == (0, 2, 60.0)
    over = cli("deploy", "autoscale", "chat", "--max", "5")
    assert over.exit_code == 4 and "quota of lab allows 2" in over.output
    missing = cli("deploy", "autoscale", "nochat", "--max", "1")
    assert missing.exit_code == 3
    nothing = cli("deploy", "autoscale", "chat")
    assert nothing.exit_code == 2
    table = cli("deploy", "list")
    assert table.exit_code == 0 and "num_running_replicas" in table.stdout.replace("\n", "")


def test_deploy_create_takes_a_device_fallback_list(cli):
    _json(cli("tenant", "create", "lab", "--kind", "university", "--json"))
    _json(cli("fleet", "add", "h100-0", "--device", "h100", "--cards", "2", "--json"))
    _json(cli("quota", "set", "--tenant", "lab", "--device", "h100", "--nominal", "1", "--json"))
    doc = _json(cli("deploy", "create", "chat", "-m", "llama-3.1-8b", "-d", "rngd,h100",
                    "--tenant", "lab", "--json"))  # fmt: skip
    assert doc["device_types"] == ["furiosa_rngd", "nvidia_h100_sxm"]
    assert [r["device_type"] for r in doc["replica_states"]] == ["nvidia_h100_sxm"]
    empty = cli("deploy", "create", "x", "-m", "llama-3.1-8b", "-d", ",", "--tenant", "lab")
    assert empty.exit_code == 2
    # a control plane without a gateway runs no engine: show says so instead of failing
    shown = _json(cli("deploy", "show", str(doc["id"]), "--json"))
    assert shown["engines"] == [] and shown["device_types"] == doc["device_types"]
    assert cli("deploy", "show", "999").exit_code == 3  # an unknown deployment still is


def test_a_twin_job_file_is_submitted_with_its_fleet_file_inline(cli, tmp_path):
    from pathlib import Path

    example = Path(__file__).parents[3] / "examples" / "jobs" / "simulate-two-services.yaml"
    cli("tenant", "create", "acme", "--kind", "company")
    cli("fleet", "add", "gpu-1", "--device", "h100", "--cards", "2")
    cli("quota", "set", "--tenant", "acme", "--device", "h100", "--nominal", "1")
    job = _json(cli("job", "submit", str(example), "--tenant", "acme", "--json"))
    assert job["kind"] == "simulate" and job["num_cards"] == 0  # on the host: no card
    assert job["state"] == "admitted"
    assert job["command"][1:3] == ["-m", "npucenter.jobs.simulate"]  # the center's program
    moved = tmp_path / "sim.yaml"  # the same file away from its fleet file: not found, exit 3
    moved.write_text(example.read_text())
    missing = cli("job", "submit", str(moved), "--tenant", "acme")
    assert missing.exit_code == 3 and "fleet file" in missing.stderr
