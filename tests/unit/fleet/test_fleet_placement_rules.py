"""The twin places replicas with the live center's admission policy (gang, TP, quotas)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from npucenter.catalog import default_catalog
from npucenter.errors import CapacityUnavailableError, InvalidConfigError
from npucenter.fleet.placement import fleet_admission, place_fleet
from npucenter.fleet.spec import fleet_spec_from_mapping
from npucenter.policy.admission import PendingReason, decide_admission
from npucenter.sim.center import build_center
from npucenter.workload import FixedLength, PoissonArrivals, synthetic_trace

ROOT = Path(__file__).resolve().parents[3]


def _fleet(services, servers=None, **extra):
    return fleet_spec_from_mapping(
        {
            "servers": servers or [{"device": "rngd", "count": 2, "cards_per_server": 8}],
            "services": services,
            **extra,
        }
    )


def _assert_disjoint_gangs(placement, tp_of):
    held = set()
    for rep in placement.replicas:
        assert len(rep.card_indices) == tp_of(rep)  # the gang, all on one server
        for card in rep.card_indices:
            assert (rep.server_id, card) not in held
            held.add((rep.server_id, card))


def test_80_20_fleet_places_every_replica_as_a_gang_on_one_server():
    spec = fleet_spec_from_mapping(
        yaml.safe_load((ROOT / "examples/fleets/gwangju-80-20.yaml").read_text())
    )
    placement = place_fleet(spec)
    assert len(placement.replicas) == 4 * 2 + 1 * 4
    _assert_disjoint_gangs(placement, lambda r: spec.deployments[r.deployment_index].tp)
    assert placement.unused_cards == {"rngd": 0, "h100": 0}
    assert {r.server_id for r in placement.replicas} == {
        "rngd-0",
        "rngd-1",
        "rngd-2",
        "rngd-3",
        "h100-0",
    }


def test_per_server_entries_take_the_cards_the_file_gives_them_as_the_live_center_does():
    # 4 x TP=3 and 2 x TP=2 per 16-card server fill each server exactly; a best-fit packing of
    # the same gangs could strand cards, but per-server entries are not re-packed
    spec = _fleet(
        [
            {"service": "a", "model": "m", "device": "rngd", "tp": 3, "replicas_per_server": 4},
            {"service": "b", "model": "m", "device": "rngd", "tp": 2, "replicas_per_server": 2},
            {"service": "c", "model": "m", "device": "rngd", "tp": 1, "replicas": 1},
        ],
        servers=[{"device": "rngd", "count": 2, "cards_per_server": 17}],
    )
    placement = place_fleet(spec)
    on_0 = [
        (r.deployment_index, r.card_indices) for r in placement.replicas if r.server_id == "rngd-0"
    ]
    assert on_0[:6] == [
        (0, (0, 1, 2)),
        (0, (3, 4, 5)),
        (0, (6, 7, 8)),
        (0, (9, 10, 11)),
        (1, (12, 13)),
        (1, (14, 15)),
    ]
    # the total-count entry is admitted into what is left: card 16 of one server
    (extra,) = [r for r in placement.replicas if r.deployment_index == 2]
    assert extra.card_indices == (16,)
    assert placement.unused_cards == {"rngd": 1}


def test_placement_is_the_live_policys_decision_on_the_fleet_snapshot():
    spec = _fleet([{"model": "llama-3.1-8b", "device": "rngd", "tp": 2, "replicas": 5}])
    setup = fleet_admission(spec)
    assert setup.snapshot.running == ()  # a total count: every replica is admitted
    live = decide_admission(setup.snapshot, setup.pending, 0.0)
    placement = place_fleet(spec)
    assert {(a.server_id, a.card_indices) for a in live.admitted} == {
        (r.server_id, r.card_indices) for r in placement.replicas
    }


def test_total_replicas_need_not_divide_by_servers():
    spec = _fleet(
        [{"model": "llama-3.1-8b", "device": "rngd", "tp": 4, "replicas": 3}],
        servers=[{"device": "rngd", "count": 2, "cards_per_server": 8}],
    )
    placement = place_fleet(spec)
    assert len(placement.replicas) == 3
    assert placement.unused_cards == {"rngd": 4}
    center = build_center(spec, default_catalog())
    assert center.unused_cards == {"rngd": 4}
    assert [r for r, _, _ in center._layout] == [r.replica_id for r in placement.replicas]


def test_a_fleet_whose_gangs_do_not_fit_fails_with_the_policys_pending_reasons():
    # 12 of 12 cards, but a TP=4 gang stays on one server: only one fits per 6-card server
    spec = _fleet(
        [{"model": "llama-3.1-8b", "device": "rngd", "tp": 4, "replicas": 3}],
        servers=[{"device": "rngd", "count": 2, "cards_per_server": 6}],
    )
    with pytest.raises(CapacityUnavailableError) as info:
        place_fleet(spec)
    attempts = info.value.attempts
    assert len(attempts) == 1
    assert attempts[0]["reason"] == PendingReason.NO_CAPACITY.value
    assert attempts[0]["tenant"] == "llama-3.1-8b"
    with pytest.raises(CapacityUnavailableError):
        build_center(spec, default_catalog())


def test_explicit_tenants_quotas_and_cohort_borrowing():
    services = [
        {"model": "llama-3.1-8b", "device": "rngd", "replicas": 6, "tenant": "acme"},
        {"service": "edu", "model": "llama-3.1-8b", "device": "rngd", "replicas": 2},
    ]
    # acme borrows 2 of kaist's lendable cards within the cohort
    tenants = {
        "acme": {"cohort": "center", "nominal_cards": {"rngd": 4}},
        "kaist": {"cohort": "center", "priority": "research", "nominal_cards": {"rngd": 4}},
    }
    placement = place_fleet(_fleet(services, tenants=tenants))
    assert sum(r.tenant == "acme" for r in placement.replicas) == 6
    assert sum(r.tenant == "edu" for r in placement.replicas) == 2  # its own covering quota
    # without a cohort acme may not exceed its nominal 4 cards
    tenants["acme"] = {"nominal_cards": {"rngd": 4}}
    with pytest.raises(CapacityUnavailableError) as info:
        place_fleet(_fleet(services, tenants=tenants))
    # four one-card replicas fit the nominal quota; the other two wait on the quota in use
    reasons = [a["reason"] for a in info.value.attempts]
    assert reasons == [PendingReason.QUOTA_IN_USE.value] * 2
    assert {a["tenant"] for a in info.value.attempts} == {"acme"}


@pytest.mark.parametrize(
    ("services", "extra", "field"),
    [
        ([{"model": "m", "device": "rngd", "tenant": "nobody"}], {}, "services.tenant"),
        (
            [{"model": "m", "device": "rngd", "replicas": 2, "replicas_per_server": 1}],
            {},
            "services.replicas",
        ),
        ([{"model": "m", "device": "rngd", "replicas": 17}], {}, "services"),
        ([{"model": "m", "device": "rngd", "tp": 16, "replicas": 1}], {}, "services"),
        ([{"model": "m", "device": "rngd"}], {"tenants": {"a": {"colour": 1}}}, "tenants.a"),
    ],
)
def test_fleet_file_errors_name_the_key(services, extra, field):
    with pytest.raises(InvalidConfigError) as info:
        _fleet(services, **extra)
    assert info.value.field == field


def test_a_total_replicas_fleet_simulates_every_request_once():
    spec = _fleet(
        [
            {"model": "llama-3.1-8b", "device": "rngd", "replicas": 3},
            {"model": "llama-3.1-8b", "device": "h100", "replicas": 1},
        ],
        servers=[
            {"device": "rngd", "count": 2, "cards_per_server": 8},
            {"device": "h100", "count": 1, "cards_per_server": 8},
        ],
    )
    trace = synthetic_trace(
        num_requests=200,
        arrivals=PoissonArrivals(rate_rps=5.0),
        prompt=FixedLength(tokens=300),
        output=FixedLength(tokens=30),
        rng=np.random.default_rng(0),
    )
    res = build_center(spec, default_catalog()).run(trace)
    assert res.summary["completed"] == 200
    assert len(res.replica_ids) == 4
