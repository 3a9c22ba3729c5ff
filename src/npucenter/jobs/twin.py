"""Twin jobs: the digital twin (``simulate``) and the capacity planner (``plan``) as jobs.

A twin job is a program job like ``preprocess``/``finetune`` (``python -m npucenter.jobs.<kind>
--spec spec.json``, in the job's sandbox): the API validates its spec here when it is
submitted, the runner writes ``spec.json`` into its work dir, the program runs the pure twin
(:mod:`npucenter.sim`, :mod:`npucenter.plan`) on it, prints its progress to its log and writes
its result document. The spec carries everything inline (the fleet file's mapping or the plan
spec, a packaged trace's name), so the program reads no file of the center.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from npucenter.errors import InvalidConfigError
from npucenter.fleet.spec import FleetSpec, fleet_spec_from_mapping
from npucenter.plan.spec import parse_plan_spec
from npucenter.policy.routing import ROUTING_POLICIES
from npucenter.workload import (
    AZURE_TRACES,
    EmpiricalLengths,
    PoissonArrivals,
    Trace,
    read_azure_trace,
    synthetic_trace,
)

__all__ = [
    "MAX_SIM_REQUESTS",
    "TWIN_KINDS",
    "jsonable",
    "sim_trace",
    "twin_spec",
]

#: Job kinds that run the twin.
TWIN_KINDS = ("simulate", "plan")
#: A simulation job replays at most this many requests (a twin job holds a card while it runs).
MAX_SIM_REQUESTS = 50_000
_MAX_RATE_RPS = 100_000.0
_SIM_KEYS = {"fleet", "fleet_label", "trace", "num_requests", "policy", "rate_scale", "seed"}
_PLAN_KEYS = {"plan", "plan_label", "verify"}


def twin_spec(kind: str, doc: Mapping[str, Any]) -> dict[str, Any]:
    """The validated spec of a ``simulate`` or ``plan`` job, as stored (JSON)."""
    if not isinstance(doc, Mapping):
        raise InvalidConfigError("spec", type(doc).__name__, "must be a mapping")
    known = _SIM_KEYS if kind == "simulate" else _PLAN_KEYS
    unknown = sorted(set(doc) - known)
    if unknown:
        raise InvalidConfigError(
            f"{kind}.{unknown[0]}",
            doc[unknown[0]],
            f"unknown key; known: {', '.join(sorted(known))}",
        )
    if kind == "simulate":
        return _sim_spec(doc)
    if kind == "plan":
        plan = doc.get("plan")
        if not isinstance(plan, Mapping):
            raise InvalidConfigError("plan.plan", plan, "the plan spec (a mapping) is required")
        parse_plan_spec(plan)  # raises naming the field
        verify = doc.get("verify", False)
        if not isinstance(verify, bool):
            raise InvalidConfigError("plan.verify", verify, "must be true or false")
        return {
            "program": "plan",
            "plan": dict(plan),
            "plan_label": str(doc.get("plan_label") or plan.get("name") or "plan")[:200],
            "verify": verify,
        }
    raise InvalidConfigError("kind", kind, f"twin jobs are {', '.join(TWIN_KINDS)}")


def _sim_spec(doc: Mapping[str, Any]) -> dict[str, Any]:
    fleet = doc.get("fleet")
    if not isinstance(fleet, Mapping):
        raise InvalidConfigError("simulate.fleet", fleet, "the fleet file's mapping is required")
    if fleet.get("catalog"):
        raise InvalidConfigError(
            "simulate.fleet.catalog",
            fleet.get("catalog"),
            "a fleet with its own catalog files runs with `npucenter simulate` only",
            hint="pick a fleet that uses the shipped catalog",
        )
    spec = sim_fleet(fleet)
    if not spec.deployments:
        raise InvalidConfigError("simulate.fleet.services", None, "the fleet serves nothing")
    trace = doc.get("trace", "conv")
    sim_trace_check(trace)
    n = doc.get("num_requests", 1000)
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_SIM_REQUESTS:
        raise InvalidConfigError(
            "simulate.num_requests", n, f"must be an integer from 1 to {MAX_SIM_REQUESTS:,}"
        )
    policy = doc.get("policy", "least-outstanding-tokens")
    ROUTING_POLICIES.get(str(policy))  # unknown names fail, listing the valid ones
    scale = doc.get("rate_scale", 1.0)
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not 0 < scale <= 1000:
        raise InvalidConfigError("simulate.rate_scale", scale, "must be in (0, 1000]")
    seed = doc.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise InvalidConfigError("simulate.seed", seed, "must be an integer")
    return {
        "program": "simulate",
        "fleet": dict(fleet),
        "fleet_label": str(doc.get("fleet_label") or fleet.get("name") or "fleet")[:200],
        "trace": str(trace),
        "num_requests": n,
        "policy": str(policy),
        "rate_scale": float(scale),
        "seed": seed,
    }


def sim_fleet(fleet: Mapping[str, Any]) -> FleetSpec:
    """The fleet of a simulation job (the live center's keys are ignored, as `simulate` does)."""
    return fleet_spec_from_mapping(fleet)


def sim_trace_check(name: Any) -> None:
    """Raise unless ``name`` is a packaged trace (``conv``, ``code``) or ``synthetic:RATE``."""
    valid = [*AZURE_TRACES, "synthetic:RATE"]
    if not isinstance(name, str):
        raise InvalidConfigError("simulate.trace", name, f"one of {', '.join(valid)}")
    if name.lower().removeprefix("azure-") in AZURE_TRACES:
        return
    kind, _, rate = name.partition(":")
    try:
        rate_rps = float(rate)
    except ValueError:
        rate_rps = math.nan
    if kind.lower() != "synthetic" or not 0 < rate_rps <= _MAX_RATE_RPS:
        raise InvalidConfigError(
            "simulate.trace",
            name,
            f"one of {', '.join(valid)} (a rate in req/s, e.g. synthetic:20)",
        )


def sim_trace(name: str, *, num_requests: int, seed: int) -> Trace:
    """The trace of a simulation job: the first ``num_requests`` of a packaged trace, or a
    Poisson one with the Azure conversation trace's lengths (as `npucenter simulate` makes)."""
    sim_trace_check(name)
    if not name.lower().startswith("synthetic"):
        return read_azure_trace(name).head(num_requests)
    rate_rps = float(name.partition(":")[2])
    conv = read_azure_trace("conv")
    return synthetic_trace(
        num_requests=num_requests,
        arrivals=PoissonArrivals(rate_rps=rate_rps),
        prompt=EmpiricalLengths.from_array(conv.prompt_tokens),
        output=EmpiricalLengths.from_array(conv.output_tokens),
        rng=np.random.default_rng(seed),
        name=f"synthetic-poisson-{rate_rps:g}rps",
    )


def jsonable(obj: Any) -> Any:
    """``obj`` as strict JSON: NaN and infinities become None, numpy scalars Python's."""
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    return obj
