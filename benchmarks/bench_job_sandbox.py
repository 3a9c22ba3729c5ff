"""What the job sandbox costs at start: one job's process, unisolated against sandboxed.

Before (the job runner until the sandbox): the command spawned as the server's user with its
environment. After: the same command through :class:`npucenter.executors.sandbox.Sandbox`
(bubblewrap, a uid of its own when root, new namespaces, rlimits). Measured: wall time from
spawn to exit of ``true`` and of ``python -c pass`` (the interpreter this runs on), median and
p90 of ``--runs`` each, on this machine (2 shared cores). A job's own run time is not changed by
the sandbox (the same process, with limits); only its start is.

Also what the runner adds around each local run (issue 13's durability and key items): writing
and removing its process mark (``executors.runmark``: one small fsynced file), and making and
revoking its own key (scope ``job``: a scrypt hash, in a SQLite store) where the job can reach
the gateway; median of ``--runs`` each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

from npucenter.executors.procs import spawn_group
from npucenter.executors.sandbox import JobIsolation, Sandbox, SandboxPolicy


def _run_once(sandbox: Sandbox, argv: list[str], root: Path, job_id: int) -> float:
    box = sandbox.prepare(job_id, root / f"job-{job_id}" / "work")
    env = sandbox.environment({}, box)
    command = sandbox.command(argv, box)
    started = time.perf_counter()
    with open(root / f"job-{job_id}.log", "wb") as out:
        proc = spawn_group(
            command, env=env, out=out, cwd=box.work_dir, preexec=sandbox.preexec(box)
        )
    code = proc.wait()
    elapsed = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"{argv} exited {code}: {(root / f'job-{job_id}.log').read_text()}")
    return elapsed


def _stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": 1e3 * statistics.median(ordered),
        "p90_ms": 1e3 * ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
        "min_ms": 1e3 * ordered[0],
    }


def _run_extras(root: Path, runs: int) -> dict[str, dict[str, float]]:
    from npucenter.api import create_app
    from npucenter.executors.runmark import clear_mark, write_mark
    from npucenter.settings import Settings

    marks: list[float] = []
    for i in range(runs):
        run_dir = root / f"mark-{i}"
        run_dir.mkdir()
        started = time.perf_counter()
        write_mark(run_dir, job_id=i, pid=os.getpid(), admitted_at_s=None, run_token="t")
        clear_mark(run_dir)
        marks.append(time.perf_counter() - started)
    settings = Settings(data_dir=root / "store", database_url=f"sqlite:///{root}/store.db")
    settings.ensure_data_dir()
    control = create_app(settings).state.control
    with control.tx() as repo:
        tenant_id = repo.create_tenant("bench", "company").id
    keys: list[float] = []
    for i in range(runs):
        started = time.perf_counter()
        with control.tx() as repo:
            row, _secret = repo.create_key(tenant_id=tenant_id, scope="job", name=f"job-{i}")
        with control.tx() as repo:
            repo.revoke_key(row.id)
        keys.append(time.perf_counter() - started)
    control.db.dispose()
    return {"process_mark": _stats(marks), "job_key": _stats(keys)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    sandboxed = Sandbox()
    reason = sandboxed.unavailable_reason()
    if reason is not None:  # `make bench` goes on: nothing to measure here
        print(f"bench_job_sandbox: skipped, the sandbox cannot run here: {reason}")
        return
    bare = Sandbox(SandboxPolicy(isolation=JobIsolation.NONE))
    programs = {"true": ["true"], "python -c pass": [sys.executable, "-c", "pass"]}
    result: dict[str, object] = {"runs": args.runs, "root": sandboxed.is_root, "programs": {}}
    job_id = 1
    with tempfile.TemporaryDirectory(prefix="bench-sandbox-") as tmp:
        root = Path(tmp)
        for name, argv in programs.items():
            times: dict[str, list[float]] = {"before": [], "after": []}
            for _ in range(args.runs):  # interleaved, so load on the machine hits both alike
                for label, sandbox in (("before", bare), ("after", sandboxed)):
                    times[label].append(_run_once(sandbox, argv, root, job_id))
                    job_id += 1
            result["programs"][name] = {k: _stats(v) for k, v in times.items()}  # type: ignore[index]
        result["run_extras"] = _run_extras(root, args.runs)
    path = write_result("job_sandbox", result)
    for name, row in result["programs"].items():  # type: ignore[attr-defined]
        print(
            f"{name:16s} unisolated {row['before']['median_ms']:7.1f} ms   "
            f"sandboxed {row['after']['median_ms']:7.1f} ms (median of {args.runs})"
        )
    for name, stats in result["run_extras"].items():  # type: ignore[attr-defined]
        print(f"{name:16s} {stats['median_ms']:7.1f} ms (median of {args.runs}; per run)")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
