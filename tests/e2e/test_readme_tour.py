"""README.md's tour, command by command, as written, in order, against a fresh `npucenter up`.

Every ```bash and ```python block of the "A short tour" section runs; the only edits are the ones
a reader makes: the admin key `up` printed for `<the key>`/`<admin key>`, and this center's port
for 8000. The commands run in a scratch directory where `examples` is the repository's (the
README says its example paths are relative to the repository root), so nothing is written into
the checkout. The center runs with the opt-ins the README names for a benchmark job
(`NPUCENTER_JOB_NETWORK=host`, and `NPUCENTER_JOB_ISOLATION=none` where bubblewrap is missing).
At the end, the tenant's key made in the tour is in no table of the store and no log.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _center import running_up

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "tour-admin-key-0123456789abcdef"
_FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)


def tour_blocks(readme: str) -> list[tuple[str, str]]:
    """(language, text) of every bash/python block between "## A short tour" and the next
    second-level heading."""
    section = readme.split("## A short tour", 1)[1].split("\n## ", 1)[0]
    return [(m[1], m[2]) for m in _FENCE.finditer(section) if m[1] in ("bash", "python")]


def bash_commands(block: str) -> list[str]:
    """The block's commands, continuation lines joined."""
    return [c.strip() for c in block.replace("\\\n", " ").splitlines() if c.strip()]


def test_the_tour_has_the_sections_it_promises() -> None:
    blocks = tour_blocks((ROOT / "README.md").read_text())
    commands = [c for lang, text in blocks if lang == "bash" for c in bash_commands(text)]
    for needle in ("tenant create acme", "deploy create chat", "simulate", "plan", "bench run"):
        assert any(needle in c for c in commands), needle
    assert any(lang == "python" for lang, _ in blocks)


def test_every_tour_command_runs_as_written(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "examples").symlink_to(ROOT / "examples")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NPUCENTER_")}
    env["NPUCENTER_ADMIN_KEY"] = ADMIN
    env["NPUCENTER_JOB_NETWORK"] = "host"
    if shutil.which("bwrap") is None:
        env["NPUCENTER_JOB_ISOLATION"] = "none"
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    with running_up(tmp_path / "data", env, log_path=tmp_path / "up.log") as up:
        shell_env = {**env, "NPUCENTER_URL": up.url}
        shell_env.pop("NPUCENTER_ADMIN_KEY")
        blocks = tour_blocks((ROOT / "README.md").read_text())
        for lang, text in blocks:
            text = _as_a_reader_types_it(text, up.port)
            if lang == "python":
                _run([sys.executable, "-c", text], work, shell_env, what=text)
                continue
            for command in bash_commands(text):
                if command.startswith("export "):  # as the reader's shell would set it
                    name = command[len("export ") :].split("=", 1)[0]
                    shell_env[name] = _run(
                        ["bash", "-c", f'{command}\nprintf %s "${name}"'],
                        work,
                        shell_env,
                        what=command,
                    )
                    continue
                if re.match(r"npucenter job result \d+", command):
                    _wait_for_job(command.split()[3], work, shell_env)
                _run(["bash", "-c", command], work, shell_env, what=command)
        # the tenant's key (made in the tour) is in no stored row and no log: the benchmark
        # job called the gateway with a key of its own, revoked when it ended
        tenant_key = shell_env["KAIST_KEY"]
        assert tenant_key.startswith("npc_")
        secret_part = tenant_key.split("_", 2)[2]
        for where, text in _everything_kept(tmp_path / "data", tmp_path / "up.log"):
            assert secret_part not in text, f"the tenant's key is in {where}"
        job_keys = _rows(tmp_path / "data", "SELECT revoked_at_s FROM api_keys WHERE scope='job'")
        assert job_keys and all(revoked is not None for (revoked,) in job_keys)


def _rows(data_dir: Path, query: str) -> list[tuple]:
    [db] = data_dir.glob("*.db")
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute(query).fetchall()


def _everything_kept(data_dir: Path, up_log: Path) -> list[tuple[str, str]]:
    """(where, text) of every table of the store, the center's log and every job's log."""
    kept = [(str(up_log), up_log.read_text(errors="replace"))]
    tables = [
        name for (name,) in _rows(data_dir, "SELECT name FROM sqlite_master WHERE type='table'")
    ]
    for table in tables:
        kept.append((f"table {table}", repr(_rows(data_dir, f'SELECT * FROM "{table}"'))))
    for log in data_dir.glob("jobs/job-*/output.log"):
        kept.append((str(log), log.read_text(errors="replace")))
    return kept


def _as_a_reader_types_it(text: str, port: int) -> str:
    return (
        text.replace("<the key>", ADMIN)
        .replace("<admin key>", ADMIN)
        .replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    )


def _run(argv: list[str], cwd: Path, env: dict[str, str], *, what: str) -> str:
    started = time.monotonic()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (
        f"{what!r} exited {done.returncode} after {time.monotonic() - started:.0f} s:\n"
        f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    )
    return done.stdout


def _wait_for_job(job_id: str, cwd: Path, env: dict[str, str], timeout_s: float = 180.0) -> None:
    """What a reader does before `job result`: wait until the job has finished."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = subprocess.run(
            ["npucenter", "job", "show", job_id, "--json"],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        state = re.search(r'"state":\s*"(\w+)"', done.stdout)
        if state is not None and state[1] in ("succeeded", "failed", "cancelled"):
            assert state[1] == "succeeded", f"job {job_id} {state[1]}: {done.stdout[-3000:]}"
            return
        time.sleep(1.0)
    raise AssertionError(f"job {job_id} did not finish in {timeout_s:.0f} s")
