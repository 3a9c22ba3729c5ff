"""Autoscaling decisions on hand-made loads: each signal, the steps, the bounds."""

from __future__ import annotations

import pytest

from npucenter.errors import InvalidConfigError
from npucenter.policy.autoscaling import (
    AutoscalePolicy,
    DeploymentLoad,
    ScaleReason,
    decide_scale,
)

POLICY = AutoscalePolicy(
    min_replicas=1, max_replicas=10, target_concurrency_per_replica=10, scale_down_delay_s=60
)


def test_queue_depth_scales_up_within_one_step() -> None:
    d = decide_scale(POLICY, DeploymentLoad(num_ready=2, num_queued=25, num_running=15), now_s=0)
    assert (d.desired, d.reason) == (4, ScaleReason.QUEUE) and d.delta == 2
    big = decide_scale(POLICY, DeploymentLoad(num_ready=2, num_queued=500), now_s=0)
    assert (big.desired, big.reason) == (4, ScaleReason.STEP)  # x2 at most


def test_starting_replicas_count_as_capacity() -> None:
    d = decide_scale(POLICY, DeploymentLoad(num_ready=2, num_starting=2, num_queued=40), now_s=0)
    assert d.current == 4 and d.desired == 4 and d.reason is ScaleReason.HOLD


def test_kv_pressure_and_missed_slo_scale_up() -> None:
    kv = decide_scale(
        POLICY, DeploymentLoad(num_ready=4, num_running=8, kv_used_fraction=0.96), now_s=0
    )
    assert (kv.desired, kv.reason) == (5, ScaleReason.KV)
    slo = decide_scale(
        POLICY, DeploymentLoad(num_ready=3, num_running=3, slo_attainment=0.5), now_s=0
    )
    assert (slo.desired, slo.reason) == (4, ScaleReason.SLO)


def test_scale_down_waits_then_steps_one_at_a_time() -> None:
    quiet = DeploymentLoad(num_ready=5, num_running=2, last_change_s=100.0, last_request_s=150.0)
    assert decide_scale(POLICY, quiet, now_s=120).reason is ScaleReason.HOLD
    later = decide_scale(POLICY, quiet, now_s=200)
    assert (later.desired, later.reason) == (4, ScaleReason.STEP)


def test_no_scale_down_while_the_slo_is_missed() -> None:
    load = DeploymentLoad(num_ready=5, num_running=2, slo_attainment=0.8, last_change_s=0.0)
    assert decide_scale(POLICY, load, now_s=1_000).desired >= 5


def test_scale_to_zero_after_idle_and_back_from_zero() -> None:
    policy = AutoscalePolicy(min_replicas=0, max_replicas=4, idle_to_zero_s=300)
    recent = DeploymentLoad(num_ready=2, last_request_s=900.0, last_change_s=0.0)
    assert decide_scale(policy, recent, now_s=1_000).desired == 1  # idle, not long enough
    idle = decide_scale(policy, recent, now_s=1_200)
    assert (idle.desired, idle.reason) == (0, ScaleReason.IDLE)
    held = decide_scale(policy, DeploymentLoad(num_ready=0, num_queued=3), now_s=1_300)
    assert (held.desired, held.reason) == (1, ScaleReason.COLD_START)
    starting = DeploymentLoad(num_ready=0, num_starting=1, num_queued=3)
    assert decide_scale(policy, starting, now_s=1_301).desired == 1  # not asked twice


def test_bounds_and_quota() -> None:
    floor = decide_scale(POLICY, DeploymentLoad(num_ready=0), now_s=0)
    assert (floor.desired, floor.reason) == (1, ScaleReason.MIN)
    capped = decide_scale(POLICY, DeploymentLoad(num_ready=8, num_queued=500), now_s=0)
    assert (capped.desired, capped.reason) == (10, ScaleReason.MAX)
    quota = DeploymentLoad(num_ready=2, num_queued=500, quota_replicas=3)
    q = decide_scale(POLICY, quota, now_s=0)
    assert (q.desired, q.reason) == (3, ScaleReason.QUOTA)


@pytest.mark.parametrize(
    "field,value",
    [
        ("min_replicas", -1),
        ("max_replicas", 0),
        ("target_concurrency_per_replica", 0),
        ("target_kv_used_fraction", 1.5),
        ("target_slo_attainment", 0),
        ("idle_to_zero_s", -1),
        ("max_scale_up_factor", 1.0),
        ("max_scale_down_step", 0),
    ],
)
def test_invalid_policies_are_refused(field: str, value: float) -> None:
    with pytest.raises(InvalidConfigError) as info:
        AutoscalePolicy(**{field: value})  # type: ignore[arg-type]
    assert info.value.field == field
