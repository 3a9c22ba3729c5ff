"""Host jobs (policy/admission/host.py): admitted by count per tenant, oldest first, no card."""

from __future__ import annotations

from npucenter.policy.admission.host import HOST_JOBS_PER_TENANT, HostJob, admit_host_jobs


def _jobs(*spec: tuple[str, str, float]) -> list[HostJob]:
    return [HostJob(workload_id=w, tenant=t, submitted_s=s) for w, t, s in spec]


def test_each_tenant_runs_at_most_the_limit_oldest_first() -> None:
    pending = _jobs(("job:3", "lab", 3.0), ("job:1", "lab", 1.0), ("job:2", "lab", 2.0),
                    ("job:4", "corp", 4.0))  # fmt: skip
    admitted, waiting = admit_host_jobs(pending, {"lab": 0}, limit=2)
    assert [j.workload_id for j in admitted] == ["job:1", "job:2", "job:4"]
    assert [j.workload_id for j in waiting] == ["job:3"]


def test_running_host_jobs_count_against_the_limit() -> None:
    pending = _jobs(("job:5", "lab", 5.0), ("job:6", "corp", 6.0))
    admitted, waiting = admit_host_jobs(pending, {"lab": HOST_JOBS_PER_TENANT, "corp": 1})
    assert [j.workload_id for j in admitted] == ["job:6"]
    assert [j.workload_id for j in waiting] == ["job:5"]
    assert admit_host_jobs([], {"lab": 5}) == ([], [])
