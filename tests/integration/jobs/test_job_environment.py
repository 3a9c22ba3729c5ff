"""What a job's process sees: its cards, its result path, none of the server's secrets."""

from __future__ import annotations

from pathlib import Path

from npucenter.executors.jobs import (
    ENV_RESULT_PATH,
    VISIBLE_DEVICES_ENV,
    expand_job_argv,
    job_environment,
)


def _env(device_type: str, cards=(2, 3)):
    base = {
        "PATH": "/usr/bin",
        "NPUCENTER_ADMIN_KEY": "secret-admin",
        "NPUCENTER_API_KEY": "secret-key",
        "NPUCENTER_DATABASE_URL": "postgresql://u:pw@db/npc",
    }
    return job_environment(
        7,
        kind="benchmark",
        device_type=device_type,
        server="s-1",
        cards=cards,
        result_path=Path("/w/job-7/result.json"),
        base=base,
    )


def test_the_server_secrets_never_reach_a_job():
    env = _env("h100")
    assert env["PATH"] == "/usr/bin"
    assert not {"NPUCENTER_ADMIN_KEY", "NPUCENTER_API_KEY", "NPUCENTER_DATABASE_URL"} & set(env)


def test_each_device_family_gets_its_visible_devices_variable():
    gpu, rbln, rngd = _env("nvidia_h100_sxm"), _env("rebellions_atom"), _env("furiosa_rngd")
    assert gpu["CUDA_VISIBLE_DEVICES"] == "2,3" and gpu["NPUCENTER_CARDS"] == "2,3"
    assert rbln["RBLN_DEVICES"] == "2,3" and "CUDA_VISIBLE_DEVICES" not in rbln
    assert rngd[VISIBLE_DEVICES_ENV["rngd"]] == "npu:2,npu:3"  # furiosa-llm's --devices value
    assert gpu["NPUCENTER_JOB_ID"] == "7" and gpu["NPUCENTER_NUM_CARDS"] == "2"
    assert gpu[ENV_RESULT_PATH] == "/w/job-7/result.json" and gpu["NPUCENTER_SERVER"] == "s-1"


def test_argv_names_the_jobs_own_variables_without_a_shell():
    env = _env("h100")
    argv = ["bench", "--json", "$(NPUCENTER_RESULT_PATH)", "--cards=${NPUCENTER_CARDS}"]
    argv += ["$NPUCENTER_JOB_ID", "$HOME", "$(NPUCENTER_ADMIN_KEY)", "$NPUCENTER_JOB_IDX"]
    assert expand_job_argv(argv, env) == [
        "bench",
        "--json",
        "/w/job-7/result.json",
        "--cards=2,3",
        "7",
        "$HOME",  # not the job's: left as written
        "$(NPUCENTER_ADMIN_KEY)",
        "$NPUCENTER_JOB_IDX",
    ]
