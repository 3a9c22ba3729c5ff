"""The twin drains a replica it scales down, like the live center: nothing new is routed to it,
its requests finish, and it stops when empty or at the policy's drain bound (which cancels)."""

from __future__ import annotations

import numpy as np
import pytest

from npucenter.catalog import default_catalog
from npucenter.fleet.spec import fleet_spec_from_mapping
from npucenter.sim.center import Center
from npucenter.workload.trace import Trace


def _spec(drain_s: float | None = None):  # type: ignore[no-untyped-def]
    knobs: dict[str, object] = {"target_concurrency_per_replica": 2, "scale_down_delay_s": 0}
    if drain_s is not None:
        knobs["drain_s"] = drain_s
    return fleet_spec_from_mapping(
        {
            "name": "drain",
            "servers": [{"device": "rngd", "count": 1, "cards_per_server": 8}],
            "services": [
                {
                    "model": "llama-3.1-8b",
                    "device": "rngd",
                    "tp": 1,
                    "replicas_per_server": 4,
                    "min_replicas": 1,
                    "max_replicas": 4,
                    "autoscale": knobs,
                },
            ],
            "slo": "mlperf-llama-3.1-8b",
        }
    )


def _short_and_long() -> Trace:
    """12 requests a second apart, streams of 3,000 and 300 tokens in turn, then one short request
    every 5 s for 2 minutes: the pool grows to 4, and shrinks when the short streams are done,
    while every replica still streams a long one (2 per replica is the target)."""
    arrivals = np.concatenate([np.arange(0.0, 12.0, 1.0), np.arange(13.0, 132.0, 5.0)])
    output = np.full(len(arrivals), 20, dtype=np.int64)
    output[:12] = np.where(np.arange(12) % 2 == 0, 3000, 300)
    return Trace(
        name="short-and-long",
        arrival_s=arrivals,
        prompt_tokens=np.full(len(arrivals), 300, dtype=np.int64),
        output_tokens=output,
    )


@pytest.fixture(scope="module")
def catalog():  # type: ignore[no-untyped-def]
    return default_catalog()


def _scaled(summary: dict) -> dict:  # type: ignore[type-arg]
    return next(iter(summary["autoscaling"].values()))  # type: ignore[no-any-return]


def test_a_scale_down_with_streams_in_flight_loses_none(catalog) -> None:  # type: ignore[no-untyped-def]
    trace = _short_and_long()
    result = Center(_spec(), catalog).run(trace)
    s = result.summary
    scaled = _scaled(s)
    assert scaled["scale_ups"] >= 1 and scaled["scale_downs"] >= 1
    assert scaled["drained"] + scaled["revived"] == scaled["scale_downs"]  # none cut
    assert scaled["drain_cancelled"] == 0
    assert s["completed"] == len(trace) and s["rejected"] == 0
    again = Center(_spec(), catalog).run(trace).summary  # deterministic
    assert _scaled(again) == scaled and again["held"] == s["held"]


def test_the_drain_bound_cancels_what_still_runs_and_counts_it(catalog) -> None:  # type: ignore[no-untyped-def]
    trace = _short_and_long()
    s = Center(_spec(drain_s=0.0), catalog).run(trace).summary
    scaled = _scaled(s)
    lost = len(trace) - s["completed"]
    assert scaled["drain_cancelled"] > 0
    assert 0 < lost <= scaled["drain_cancelled"]  # streaming ones lost; the rest went elsewhere
    kept = Center(_spec(), catalog).run(trace).summary
    # draining holds the cards a little longer than cutting the streams
    assert kept["held"]["card_hours"] >= s["held"]["card_hours"]


def test_drain_bound_must_not_be_negative() -> None:
    from npucenter.errors import InvalidConfigError

    with pytest.raises(InvalidConfigError, match="drain_s"):
        _spec(drain_s=-1.0)


def _with_burst(at_s: float) -> Trace:
    """The short-and-long trace with a burst of 12 short requests from ``at_s``: the pool has
    shrunk (its long streams still drain) and grows again."""
    base = _short_and_long()
    burst = np.arange(at_s, at_s + 6.0, 0.5)
    arrivals = np.concatenate([base.arrival_s, burst])
    order = np.argsort(arrivals, kind="stable")
    output = np.concatenate([base.output_tokens, np.full(len(burst), 300, dtype=np.int64)])
    return Trace(
        name="short-and-long-and-burst",
        arrival_s=arrivals[order],
        prompt_tokens=np.full(len(arrivals), 300, dtype=np.int64),
        output_tokens=output[order],
    )


def test_a_scale_up_while_one_drains_serves_on_the_draining_replica(catalog) -> None:  # type: ignore[no-untyped-def]
    trace = _with_burst(30.0)
    s = Center(_spec(), catalog).run(trace).summary
    scaled = _scaled(s)
    assert scaled["revived"] >= 1  # wanted again before its drain ended: serves again
    assert scaled["drained"] + scaled["revived"] == scaled["scale_downs"]
    assert scaled["drain_cancelled"] == 0  # its streams went on
    assert s["completed"] == len(trace) and s["rejected"] == 0
    # a revived replica starts nothing cold: fewer starts than scale-ups
    later = _scaled(Center(_spec(), catalog).run(_with_burst(60.0)).summary)
    assert later["revived"] == 0  # every drain had ended: cold starts only
