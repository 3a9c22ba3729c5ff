"""A chosen plan as a fleet file: what ``npucenter plan --emit-fleet`` writes.

The mapping is in the simulator's fleet format (:mod:`npucenter.fleet.spec`, docs/simulator.md),
so ``npucenter simulate --fleet`` replays the plan and ``npucenter up --fleet`` runs it: servers
per device type, each candidate's replicas (``replicas``: a total, placed by admission) with TP
and precision, each service's SLO, routing and planned rate (as its traffic share), and the
prices the plan assumed (as the tariff). Pure: the CLI writes the YAML.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from npucenter.errors import CapacityUnavailableError, NotSupportedError
from npucenter.plan.planner import PlanOutcome, PlanResult
from npucenter.plan.profile import Candidate
from npucenter.plan.spec import PlanSpec

__all__ = ["overrides_catalog", "plan_fleet_mapping"]


def plan_fleet_mapping(
    result: PlanResult,
    *,
    outcome: PlanOutcome | None = None,  # None: the plan; or one of result.baselines
    catalog_files: Sequence[str] = (),  # user catalog files the fleet needs (paths as written)
) -> dict[str, Any]:
    """The fleet mapping of ``outcome`` (default: the chosen plan).

    Raises:
        CapacityUnavailableError: the outcome is infeasible (no fleet was found).
        NotSupportedError: a service mixes colocated and disaggregated replicas, which a fleet
            file cannot express (the center serves a service one way).
    """
    chosen = outcome if outcome is not None else result.plan
    alloc = chosen.allocation
    if alloc is None:
        raise CapacityUnavailableError(
            f"the {chosen.name} has no fleet to emit: {chosen.reason or 'infeasible'}",
            hint="relax the SLOs or the power cap, or allow more servers",
            outcome=chosen.name,
        )
    spec = result.spec
    candidates = {p.candidate.label: p.candidate for p in result.profiles}
    sizes = {d.device_id: d.cards_per_server for d in result.device_types}
    costs = {d.device_id: d.server_cost_usd_per_hour for d in result.device_types}
    services: list[dict[str, Any]] = []
    for svc in spec.services:
        units = [
            (candidates[label], n)
            for label, n in sorted(alloc.replicas.items())
            if n > 0 and candidates[label].service == svc.name
        ]
        if len({cand.disaggregated for cand, _ in units}) > 1:
            raise NotSupportedError(
                "a fleet file for a service with colocated and disaggregated replicas",
                f"service {svc.name!r} mixes both in the {chosen.name}",
                hint="plan without disaggregation for this service, or split it in two services",
            )
        for cand, count in units:
            services.extend(_deployments(svc.name, svc.model, cand, count))
    servers = [
        {"device": dev, "count": n, "cards_per_server": sizes[dev]}
        for dev, n in sorted(alloc.servers.items())
        if n > 0
    ]
    links = [c.kv_link_gbps for c, _ in _units(alloc.replicas, candidates) if c.disaggregated]
    doc: dict[str, Any] = {
        "name": f"{spec.name}-{chosen.name}",
        "description": _describe(spec, chosen),
        "servers": servers,
        "services": services,
        "slos": {
            s.name: {
                "name": f"{s.name}-slo",
                "ttft_s": s.slo.ttft_s,
                "tpot_s": s.slo.tpot_s,
                "percentile": s.slo.attainment_fraction,
                "source": s.slo.source or "plan spec",
            }
            for s in spec.services
            if any(d["service"] == s.name for d in services)
        },
        "routing": {
            s.name: spec.verification.routing
            for s in spec.services
            if any(d["service"] == s.name for d in services)
        },
        # the planned request rates: `simulate` splits one trace across services by these
        "traffic": {
            s.name: round(float(chosen.required_rps.get(s.name, 0.0)), 6)
            for s in spec.services
            if any(d["service"] == s.name for d in services)
        },
        "tariff_usd_per_device_hour": {
            dev: round(costs[dev] / sizes[dev], 6) for dev, n in sorted(alloc.servers.items()) if n
        },
    }
    if links:
        doc["network_gb_per_s"] = min(links)
    if catalog_files:
        doc["catalog"] = list(catalog_files)
    return doc


def overrides_catalog(spec: PlanSpec) -> dict[str, Any] | None:
    """The spec's device overrides as a user catalog document, or None when it has none.

    A fleet file cannot carry figures itself; the CLI writes this beside it and lists it under
    ``catalog:`` so the twin predicts with the figures the plan used.
    """
    devices = [
        {"id": d.device_id, **d.overrides, "source": d.override_source}
        for d in spec.devices
        if d.overrides
    ]
    return {"devices": devices} if devices else None


def _units(
    replicas: Mapping[str, int], candidates: Mapping[str, Candidate]
) -> list[tuple[Candidate, int]]:
    return [(candidates[label], n) for label, n in sorted(replicas.items()) if n > 0]


def _deployments(service: str, model: str, cand: Candidate, count: int) -> list[dict[str, Any]]:
    """``count`` replicas of ``cand`` (or units: one prefill replica and its decoders)."""
    base = {"service": service, "model": model, "precision": cand.precision}
    if cand.prefill_device_id is None:
        return [{**base, "device": cand.device_id, "tp": cand.tp, "replicas": count}]
    return [
        {
            **base,
            "device": cand.prefill_device_id,
            "tp": cand.prefill_tp,
            "replicas": count,
            "role": "prefill",
        },
        {
            **base,
            "device": cand.device_id,
            "tp": cand.tp,
            "replicas": count * cand.decode_per_prefill,
            "role": "decode",
        },
    ]


def _describe(spec: PlanSpec, outcome: PlanOutcome) -> str:
    alloc = outcome.allocation
    assert alloc is not None
    jobs = ", ".join(f"{n} {dev} cards" for dev, n in sorted(alloc.job_cards.items()) if n)
    verified = "verified by simulation" if outcome.verified else "NOT verified"
    return (
        f"The {outcome.name} of capacity plan {spec.name!r} ({spec.objective} objective): "
        f"{alloc.cost_usd_per_hour:.2f} USD/h, {alloc.power_w / 1e3:.1f} kW facility power, "
        f"{alloc.npu_share:.0%} NPU cards, {verified}."
        + (f" Held for GPU jobs (idle in the twin): {jobs}." if jobs else "")
        + " Prices are the plan spec's assumptions."
    )
