"""Jobs in the twin: admitted over time by the live policy (waits, reclaim, priority preemption)."""

from __future__ import annotations

import numpy as np
import pytest

from npucenter.catalog import default_catalog
from npucenter.errors import InvalidConfigError
from npucenter.fleet.placement import place_fleet
from npucenter.fleet.spec import fleet_spec_from_mapping
from npucenter.sim.center import build_center
from npucenter.sim.jobs import simulate_jobs
from npucenter.workload import FixedLength, PoissonArrivals, synthetic_trace

H100 = [{"device": "h100", "count": 1, "cards_per_server": 8}]


def _fleet(services, jobs, **extra):
    return fleet_spec_from_mapping({"servers": H100, "services": services, "jobs": jobs, **extra})


def _timeline(spec):
    return simulate_jobs(spec, place_fleet(spec))


def _job(name, *, tenant="kaist", cards=4, arrival_s=0.0, duration_s=100.0, **more):
    return {
        "name": name,
        "tenant": tenant,
        "device": "h100",
        "cards": cards,
        "arrival_s": arrival_s,
        "duration_s": duration_s,
        **more,
    }


def test_a_job_waits_for_cards_and_the_summary_reports_waits_and_allocation():
    spec = _fleet(
        [{"model": "llama-3.1-8b", "device": "h100", "replicas": 4}],
        [_job("a"), _job("b", arrival_s=10.0, duration_s=50.0)],
    )
    timeline = _timeline(spec)
    a, b = timeline.jobs
    assert (a.start_s, a.finish_s, a.wait_s) == (0.0, 100.0, 0.0)
    # only 4 cards are free beside the replicas: b waits for a
    assert (b.start_s, b.finish_s, b.wait_s) == (100.0, 150.0, 90.0)
    assert timeline.outages == ()
    summary = timeline.summary(spec, horizon_s=0.0)
    assert summary["mean_wait_s"] == pytest.approx(45.0)
    alloc = summary["card_allocation"]["h100"]
    assert alloc["replica_fraction"] == pytest.approx(4 * 150 / (8 * 150))
    assert alloc["job_fraction"] == pytest.approx((4 * 100 + 4 * 50) / (8 * 150))


def test_higher_priority_job_preempts_its_tenants_lower_one_which_restarts():
    spec = _fleet(
        [{"model": "llama-3.1-8b", "device": "h100", "replicas": 1, "tenant": "lab"}],
        [
            _job("low", tenant="lab", cards=4, priority="best-effort"),
            _job("high", tenant="lab", cards=4, arrival_s=10.0, duration_s=20.0),
        ],
        tenants={"lab": {"priority": "production", "nominal_cards": {"h100": 5}}},
    )
    low, high = _timeline(spec).jobs
    assert (high.start_s, high.finish_s, high.wait_s) == (10.0, 30.0, 0.0)
    assert low.num_preemptions == 1
    assert (low.start_s, low.finish_s, low.wait_s) == (30.0, 130.0, 20.0)  # from scratch


def test_job_never_admissible_is_reported_pending_with_the_policys_reason():
    spec = _fleet(
        [{"model": "llama-3.1-8b", "device": "h100", "replicas": 1}],
        [_job("big", cards=6)],
        tenants={"kaist": {"nominal_cards": {"h100": 4}}},
    )
    (big,) = _timeline(spec).jobs
    assert big.finish_s is None and big.start_s is None
    assert big.pending_reason == "quota_limit"


def _reclaim_fleet():
    # acme's 8 replicas borrow 4 of kaist's cards; kaist's job reclaims them at t=100
    return _fleet(
        [{"model": "llama-3.1-8b", "device": "h100", "replicas": 8, "tenant": "acme"}],
        [_job("lora", cards=4, arrival_s=100.0, duration_s=50.0)],
        tenants={
            "acme": {"cohort": "center", "priority": "production", "nominal_cards": {"h100": 4}},
            "kaist": {"cohort": "center", "priority": "research", "nominal_cards": {"h100": 4}},
        },
    )


def test_owner_reclaims_lent_cards_from_borrowing_replicas_until_its_job_ends():
    timeline = _timeline(_reclaim_fleet())
    (lora,) = timeline.jobs
    assert (lora.start_s, lora.finish_s, lora.wait_s) == (100.0, 150.0, 0.0)
    assert len(timeline.outages) == 4
    assert {(o.down_s, o.up_s) for o in timeline.outages} == {(100.0, 150.0)}


def test_center_routes_around_preempted_replicas_and_ends_every_request_once():
    spec = _reclaim_fleet()
    center = build_center(spec, default_catalog())
    trace = synthetic_trace(
        num_requests=1200,
        arrivals=PoissonArrivals(rate_rps=6.0),
        prompt=FixedLength(tokens=1000),
        output=FixedLength(tokens=200),
        rng=np.random.default_rng(3),
    )
    res = center.run(trace)
    s = res.summary
    assert s["completed"] + s["rejected"] == s["requests"] == 1200
    done = np.isfinite(res.finish_s)
    assert int(done.sum()) == s["completed"]
    down = {o.replica_id for o in center.jobs.outages}
    down_index = [k for k, rid in enumerate(res.replica_ids) if rid in down]
    arrivals = res.trace.arrival_s
    during = (arrivals >= 100.0) & (arrivals < 150.0)
    assert during.any()
    assert not np.isin(res.replica_index[during & done], down_index).any()
    after = (arrivals >= 160.0) & done
    assert np.isin(res.replica_index[after], down_index).any()  # back in routing
    jobs = s["jobs"]
    assert jobs["replica_preemptions"] == 4 and jobs["finished"] == 1
    assert set(jobs["card_allocation"]) == {"h100"}


def test_a_fleet_without_jobs_has_no_jobs_summary():
    spec = fleet_spec_from_mapping(
        {"servers": H100, "services": [{"model": "llama-3.1-8b", "device": "h100"}]}
    )
    trace = synthetic_trace(
        num_requests=20,
        arrivals=PoissonArrivals(rate_rps=1.0),
        prompt=FixedLength(tokens=100),
        output=FixedLength(tokens=10),
        rng=np.random.default_rng(0),
    )
    assert "jobs" not in build_center(spec, default_catalog()).run(trace).summary


@pytest.mark.parametrize(
    ("job", "field"),
    [
        (_job("x", colour="red"), "jobs[0]"),
        (_job("x", cards=9), "jobs.cards"),
        (_job("x", duration_s=0), "jobs.duration_s"),
        (_job("x", kind="replica"), "jobs.kind"),
        (_job("x", cards=3, tp=2), "jobs.cards"),
    ],
)
def test_job_entry_errors_name_the_key(job, field):
    with pytest.raises(InvalidConfigError) as info:
        _fleet([{"model": "llama-3.1-8b", "device": "h100"}], [job])
    assert info.value.field == field


def test_a_waiting_job_reports_the_policys_reason_and_what_to_do_in_the_summary():
    spec = _fleet(
        [{"model": "llama-3.1-8b", "device": "h100", "replicas": 1}],
        [_job("held", cards=1)],
        tenants={"kaist": {"nominal_cards": {"h100": 4}, "stop_policy": "hold"}},
    )
    (held,) = _timeline(spec).jobs
    assert held.pending_reason == "held"
    assert "held" in held.pending_message
    entry = _timeline(spec).summary(spec, 100.0)["jobs"][0]
    assert (entry["pending_reason"], entry["pending_message"]) == ("held", held.pending_message)


def test_a_fungible_job_runs_on_its_fallback_device_when_the_first_is_full():
    servers = [*H100, {"device": "rngd", "count": 1, "cards_per_server": 8}]
    spec = fleet_spec_from_mapping(
        {
            "servers": servers,
            "services": [{"model": "llama-3.1-8b", "device": "h100", "replicas": 1}],
            "jobs": [
                _job("fills", cards=4, duration_s=500.0),
                _job("eval", cards=4, arrival_s=1.0, fallback_devices=["rngd"]),
            ],
            "tenants": {"kaist": {"nominal_cards": {"h100": 4, "rngd": 4}}},
        }
    )
    fills, eval_job = _timeline(spec).jobs
    assert fills.device_ran == "h100"
    assert eval_job.device_ran == "rngd" and eval_job.wait_s == 0.0


def test_work_requeued_when_the_cycles_at_one_instant_run_out_still_says_why_it_waits(
    monkeypatch,
):
    # lab is held and drained: its job waits (held) and the cycle that job's arrival runs
    # preempts its replicas; with one cycle an instant, the run ends on that cycle
    import npucenter.sim.jobs as jobs_module

    spec = _fleet(
        [{"model": "llama-3.1-8b", "device": "h100", "replicas_per_server": 2, "tenant": "lab"}],
        [_job("x", tenant="lab", cards=1, arrival_s=10.0)],
        tenants={"lab": {"nominal_cards": {"h100": 4}, "stop_policy": "hold-and-drain"}},
    )
    settled = _timeline(spec)  # 64 cycles: the drained replicas were decided again
    monkeypatch.setattr(jobs_module, "_MAX_CYCLES_PER_INSTANT", 1)
    cut = _timeline(spec)
    assert len(cut.outages) == 2 and all(o.up_s is None for o in cut.outages)
    for outage, same in zip(cut.outages, settled.outages, strict=True):
        assert outage.pending_reason == same.pending_reason == "held"
        assert outage.pending_message == same.pending_message
    (job,) = cut.jobs
    assert job.finish_s is None and job.pending_reason == "held"
