"""Autoscaling invariants on random loads: bounds hold, more load never asks for fewer
replicas, nothing scales to zero while requests wait or run, steps are bounded."""

from __future__ import annotations

import math
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from npucenter.policy.autoscaling import AutoscalePolicy, DeploymentLoad, ScaleReason, decide_scale

policy_st = st.builds(
    lambda lo, span, conc, kv, slo, idle, delay, up, down: AutoscalePolicy(
        min_replicas=lo,
        max_replicas=max(1, lo) + span,
        target_concurrency_per_replica=conc,
        target_kv_used_fraction=kv,
        target_slo_attainment=slo,
        idle_to_zero_s=idle,
        scale_down_delay_s=delay,
        max_scale_up_factor=up,
        max_scale_down_step=down,
    ),
    st.integers(0, 4),
    st.integers(0, 12),
    st.floats(1, 64),
    st.floats(0.5, 1.0),
    st.floats(0.5, 1.0),
    st.floats(0, 600),
    st.floats(0, 120),
    st.floats(1.1, 4),
    st.integers(1, 3),
)
load_st = st.builds(
    DeploymentLoad,
    num_ready=st.integers(0, 20),
    num_starting=st.integers(0, 4),
    num_queued=st.integers(0, 400),
    num_running=st.integers(0, 400),
    kv_used_fraction=st.floats(0, 1),
    slo_attainment=st.one_of(st.none(), st.floats(0, 1)),
    last_request_s=st.one_of(st.none(), st.floats(0, 1000)),
    last_change_s=st.one_of(st.none(), st.floats(0, 1000)),
    quota_replicas=st.one_of(st.none(), st.integers(0, 30)),
)


@given(policy_st, load_st, st.floats(1000, 2000))
def test_bounds_hold(policy: AutoscalePolicy, load: DeploymentLoad, now_s: float) -> None:
    d = decide_scale(policy, load, now_s=now_s)
    assert d.desired <= policy.max_replicas
    if load.quota_replicas is not None:
        assert d.desired <= load.quota_replicas
    if load.quota_replicas is None or load.quota_replicas >= policy.min_replicas:
        assert d.desired >= policy.min_replicas
    assert d.current == load.num_ready + load.num_starting


@given(policy_st, load_st, st.floats(1000, 2000))
def test_never_zero_while_requests_wait_or_run(
    policy: AutoscalePolicy, load: DeploymentLoad, now_s: float
) -> None:
    d = decide_scale(policy, load, now_s=now_s)
    if load.num_queued + load.num_running and (load.quota_replicas is None or load.quota_replicas):
        assert d.desired >= 1


@given(policy_st, load_st, st.integers(1, 200), st.floats(1000, 2000))
def test_more_queued_requests_never_ask_for_fewer(
    policy: AutoscalePolicy, load: DeploymentLoad, more: int, now_s: float
) -> None:
    base = decide_scale(policy, load, now_s=now_s)
    busier = decide_scale(policy, replace(load, num_queued=load.num_queued + more), now_s=now_s)
    assert busier.desired >= base.desired


@given(policy_st, load_st, st.floats(1000, 2000))
def test_one_step_at_a_time(policy: AutoscalePolicy, load: DeploymentLoad, now_s: float) -> None:
    d = decide_scale(policy, load, now_s=now_s)
    current = d.current
    if current and d.desired > current and d.reason is not ScaleReason.MIN:
        assert d.desired <= max(current + 1, math.floor(current * policy.max_scale_up_factor))
    if d.desired < current and d.reason not in (
        ScaleReason.IDLE,
        ScaleReason.QUOTA,
        ScaleReason.MAX,
    ):
        assert d.desired >= current - policy.max_scale_down_step
        since_s = math.inf if load.last_change_s is None else now_s - load.last_change_s
        assert since_s >= policy.scale_down_delay_s
