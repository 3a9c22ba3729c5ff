"""The sandbox's command line, environment and limits (no process is started here)."""

from __future__ import annotations

import resource

import pytest

from npucenter.errors import InvalidConfigError, NotSupportedError
from npucenter.executors.sandbox import (
    JobIsolation,
    JobNetwork,
    Sandbox,
    SandboxPolicy,
    parse_job_limits,
)


def _box(tmp_path, policy=None, hidden=()):
    sandbox = Sandbox(policy or SandboxPolicy(), hidden=hidden, bwrap="/usr/bin/bwrap")
    return sandbox, sandbox.prepare(7, tmp_path / "work")


def test_the_job_sees_its_work_dir_at_job_and_no_network_by_default(tmp_path):
    sandbox, box = _box(tmp_path)
    argv = sandbox.command(["python", "-c", "pass"], box)
    assert argv[0] == "/usr/bin/bwrap" and argv[-3:] == ["python", "-c", "pass"]
    i = argv.index(str(box.work_dir))
    assert argv[i - 1 : i + 2] == ["--bind", str(box.work_dir), "/job"]
    assert "--unshare-net" in argv and "--unshare-pid" in argv
    assert box.inside("result.json") == "/job/result.json"
    host = Sandbox(SandboxPolicy(network=JobNetwork.HOST), bwrap="/usr/bin/bwrap")
    assert "--unshare-net" not in host.command(["true"], host.prepare(8, tmp_path / "w8"))


def test_a_hidden_path_under_a_bound_one_is_covered(tmp_path):
    ro = tmp_path / "models"
    (ro / "data").mkdir(parents=True)
    policy = SandboxPolicy(ro_paths=(ro,))
    sandbox, box = _box(tmp_path, policy, hidden=[ro / "data", tmp_path / "elsewhere"])
    argv = sandbox.command(["true"], box)
    assert ["--ro-bind", str(ro), str(ro)] == argv[
        argv.index(str(ro)) - 1 : argv.index(str(ro)) + 2
    ]
    covered = [argv[i + 1] for i, a in enumerate(argv) if a == "--tmpfs"]
    assert str((ro / "data").resolve()) in covered  # under a bound path: an empty tmpfs on it
    assert str((tmp_path / "elsewhere").resolve()) not in covered  # not in view anyway
    # mounted shallow first, so the cover lands on top of the bind
    assert argv.index(str((ro / "data").resolve())) > argv.index(str(ro))


def test_software_under_tmp_is_bound_on_top_of_the_private_tmp(tmp_path):
    # a checkout or venv under /tmp (CI's clones, pytest's tmp_path) must stay visible
    ro = tmp_path / "venv"
    ro.mkdir()
    sandbox, box = _box(tmp_path, SandboxPolicy(ro_paths=(ro,)))
    argv = sandbox.command(["true"], box)
    tmpfs = next(i for i, a in enumerate(argv) if a == "--tmpfs" and argv[i + 1] == "/tmp")
    assert argv[tmpfs - 2 : tmpfs] == [
        "--size",
        str(int(SandboxPolicy().limits.tmp_gb * 1024**3)),
    ]
    assert argv.index(str(ro)) > tmpfs  # the bind lands on the tmpfs, not under it


def test_the_environment_is_an_allow_list(tmp_path):
    sandbox, box = _box(tmp_path, SandboxPolicy(env_allow=("HF_HOME", "NPUCENTER_X")))
    base = {"PATH": "/bin", "HF_HOME": "/m", "AWS_SECRET": "s", "NPUCENTER_X": "no", "TZ": "UTC"}
    env = sandbox.environment({"NPUCENTER_JOB_ID": "7"}, box, base)
    assert env == {
        "PATH": "/bin",
        "HF_HOME": "/m",
        "TZ": "UTC",
        "HOME": "/job",
        "TMPDIR": "/tmp",
        "NPUCENTER_JOB_ID": "7",
    }


def test_limits_parse_and_become_rlimits():
    limits = parse_job_limits("cpu_s=60, memory_gb=off, max_num_processes=32, disk_gb=1")
    assert limits.cpu_s == 60 and limits.memory_gb is None and limits.disk_gb == 1
    got = dict(limits.rlimits(own_uid=True))
    assert got[resource.RLIMIT_CPU] == 60 and got[resource.RLIMIT_NPROC] == 32
    assert resource.RLIMIT_AS not in got and got[resource.RLIMIT_CORE] == 0
    assert resource.RLIMIT_NPROC not in dict(limits.rlimits(own_uid=False))
    for bad in ("cpu_s=-1", "nope=1", "memory_gb=lots", "cpu_s"):
        with pytest.raises(InvalidConfigError):
            parse_job_limits(bad)


def test_opted_out_jobs_run_their_argv_as_is_in_their_host_dir(tmp_path):
    sandbox, box = _box(tmp_path, SandboxPolicy(isolation=JobIsolation.NONE))
    assert not box.isolated and box.uid is None and box.inside_work_dir == str(box.work_dir)
    assert sandbox.command(["true"], box) == ["true"]
    sandbox.check()  # opted out: nothing to refuse


def test_a_missing_bwrap_is_a_reason_not_a_crash(tmp_path):
    sandbox = Sandbox(bwrap="/nonexistent/bwrap")
    assert "bubblewrap" in (sandbox.unavailable_reason() or "")
    with pytest.raises(NotSupportedError) as info:
        sandbox.check()
    assert "NPUCENTER_JOB_ISOLATION=none" in info.value.hint
