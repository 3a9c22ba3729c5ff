"""The capacity planner: spec -> candidates -> profiles -> MILP -> verification -> plan result.

Solves the free plan and three baselines (all-GPU, all-NPU, the fixed 80/20 share), each through
the same verify-and-re-solve loop, then the cost–power Pareto front and a sensitivity table.
Pure core: the profile source and the verifier are injected.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from npucenter.catalog import Catalog
from npucenter.errors import (
    InvalidConfigError,
    MissingFigureError,
    ModelDoesNotFitError,
    NotFoundError,
    NotSupportedError,
)
from npucenter.perf import IDLE_POWER_FRACTION, build_perf_model, idle_power_w
from npucenter.plan.milp import (
    Allocation,
    CapacityProblem,
    DeviceType,
    Kind,
    ReplicaOption,
    pareto_front,
    solve_capacity,
)
from npucenter.plan.profile import Candidate, ProfileSource, TrafficStats
from npucenter.plan.spec import PlanSpec, ServiceSpec

__all__ = [
    "BASELINES",
    "CandidateProfile",
    "PlanOutcome",
    "PlanResult",
    "SensitivityCase",
    "Verification",
    "Verifier",
    "build_device_types",
    "compare_disaggregation",
    "compare_with_rule",
    "enumerate_candidates",
    "plan_capacity",
    "raised_headroom",
    "spec_catalog",
]

BASELINES: tuple[str, ...] = ("all-gpu", "all-npu", "80-20")


@dataclass(frozen=True, slots=True, kw_only=True)
class Verification:
    """What simulating a plan on the full traffic showed."""

    slo_attainment: Mapping[str, float]  # service -> share of requests meeting both SLOs
    energy_j_per_output_token: float | None = None  # simulated (cards only, no PUE)
    mean_power_w: float | None = None  # simulated average card power
    simulated_requests: int = 0
    notes: tuple[str, ...] = ()


class Verifier(Protocol):
    """Simulates an allocation (replicas per candidate) on each service's full traffic."""

    def verify(
        self, spec: PlanSpec, allocation: Allocation, candidates: Mapping[str, Candidate]
    ) -> Verification:
        """Simulate; ``candidates`` maps the allocation's option labels to candidates."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class CandidateProfile:
    """A candidate and its profiled capacity (the MILP's input)."""

    candidate: Candidate
    max_rate_rps: float


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanOutcome:
    """One solved variant (the plan or a baseline) after verification."""

    name: str
    allocation: Allocation | None  # None: no fleet meets the demand under the cap
    verified: bool
    verification: Verification | None
    rounds: int  # MILP solves used
    headroom: Mapping[str, float]  # service -> headroom of the last solve
    required_rps: Mapping[str, float]  # service -> traffic rate (no headroom)
    output_tokens_per_s: float  # traffic's generated tokens per second
    reason: str = ""  # why infeasible or not verified
    found_by: str = ""  # set when the fleet was found (and verified) while solving another variant

    @property
    def feasible(self) -> bool:
        """Whether a fleet was found."""
        return self.allocation is not None

    @property
    def cost_per_million_output_tokens(self) -> float | None:
        """USD per million generated tokens at the planned cost and the traffic's token rate."""
        if self.allocation is None or self.output_tokens_per_s <= 0:
            return None
        return self.allocation.cost_usd_per_hour / (self.output_tokens_per_s * 3600.0) * 1e6

    @property
    def energy_j_per_output_token(self) -> float | None:
        """Planning energy per generated token: planned facility power / token rate (an upper
        bound: busy cards at TDP)."""
        if self.allocation is None or self.output_tokens_per_s <= 0:
            return None
        return self.allocation.power_w / self.output_tokens_per_s


@dataclass(frozen=True, slots=True, kw_only=True)
class SensitivityCase:
    """The plan re-solved under a what-if (MILP only, with the verified headrooms)."""

    name: str
    demand_factor: float
    power_cap_factor: float
    allocation: Allocation | None


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanResult:
    """Everything a report shows."""

    spec: PlanSpec
    plan: PlanOutcome
    baselines: Mapping[str, PlanOutcome]  # "all-gpu", "all-npu", "80-20"
    pareto: tuple[Allocation, ...]
    sensitivity: tuple[SensitivityCase, ...]
    profiles: tuple[CandidateProfile, ...]
    skipped: tuple[str, ...]  # candidates left out, with the reason
    device_types: tuple[DeviceType, ...]
    traffic: Mapping[str, TrafficStats]
    assumptions: tuple[str, ...]
    comparison: tuple[str, ...]  # plain sentences: when 80/20 is and is not the cheapest
    profile_source: str = ""
    verifier_source: str = ""


def spec_catalog(spec: PlanSpec, catalog: Catalog) -> Catalog:
    """The catalog with the spec's device overrides applied (recorded as assumptions)."""
    docs = [
        {"devices": [{"id": d.device_id, **d.overrides, "source": d.override_source}]}
        for d in spec.devices
        if d.overrides
    ]
    return catalog.with_documents(docs) if docs else catalog


def build_device_types(spec: PlanSpec, catalog: Catalog) -> tuple[DeviceType, ...]:
    """The MILP's device types: server size, price and per-card power of each spec device.

    Raises:
        MissingFigureError: a device without a TDP (supply ``overrides: {tdp_w: ...}``).
        InvalidConfigError: no server size in the spec or the catalog.
    """
    out: list[DeviceType] = []
    for opt in spec.devices:
        dev = catalog.device(opt.device_id)
        if dev.tdp_w is None:
            raise MissingFigureError("device", dev.device_id, ["tdp_w"])
        cards = opt.cards_per_server or dev.cards_per_server
        if cards is None:
            raise InvalidConfigError(
                f"devices[{opt.device_id}].cards_per_server",
                None,
                "the catalog gives no server size for this device",
                hint="state cards_per_server in the spec",
            )
        idle = idle_power_w(dev, assumed_fraction=opt.idle_power_fraction)
        assert idle is not None  # the device has a TDP (checked above)
        kind: Kind = "npu" if dev.kind == "npu" else "gpu"
        out.append(
            DeviceType(
                device_id=dev.device_id,
                kind=kind,
                cards_per_server=cards,
                server_cost_usd_per_hour=opt.server_cost_usd_per_hour,
                active_power_w=dev.tdp_w,
                idle_power_w=min(idle, dev.tdp_w),
                server_overhead_w=opt.server_overhead_w,
                min_servers=opt.min_servers,
                max_servers=opt.max_servers,
            )
        )
    return tuple(out)


def enumerate_candidates(spec: PlanSpec, catalog: Catalog) -> tuple[list[Candidate], list[str]]:
    """Every (service, device, TP, precision) and disaggregated unit the perf model can run.

    Returns the candidates and, for those left out, one line each saying why.
    """
    out: list[Candidate] = []
    skipped: list[str] = []
    ids = {d.device_id: catalog.device(d.device_id).device_id for d in spec.devices}
    for svc in spec.services:
        for opt in spec.devices:
            dev_id = ids[opt.device_id]
            for tp in svc.tp_options:
                precision, why = _first_runnable(catalog, svc, dev_id, tp)
                if precision is None:
                    skipped.append(f"{svc.name} on {dev_id} tp{tp}: {why}")
                    continue
                out.append(
                    Candidate(service=svc.name, device_id=dev_id, tp=tp, precision=precision)
                )
        for dis in spec.disaggregation:
            if dis.services and svc.name not in dis.services:
                continue
            pre_id, dec_id = ids[dis.prefill_device_id], ids[dis.decode_device_id]
            precision, why = _first_runnable(
                catalog, svc, dec_id, dis.decode_tp, also=(pre_id, dis.prefill_tp)
            )
            if precision is None:
                skipped.append(f"{svc.name} disaggregated {pre_id}->{dec_id}: {why}")
                continue
            for k in dis.decode_per_prefill:
                out.append(
                    Candidate(
                        service=svc.name,
                        device_id=dec_id,
                        tp=dis.decode_tp,
                        precision=precision,
                        prefill_device_id=pre_id,
                        prefill_tp=dis.prefill_tp,
                        decode_per_prefill=k,
                        kv_link_gbps=dis.kv_link_gbps,
                    )
                )
    return out, skipped


def plan_capacity(
    spec: PlanSpec,
    *,
    catalog: Catalog,
    traffic: Mapping[str, TrafficStats],
    profile: ProfileSource,
    verifier: Verifier | None = None,
    pareto_points: int = 8,
    profile_source: str = "",
    verifier_source: str = "",
    progress: Callable[[str], None] | None = None,
) -> PlanResult:
    """Plan the cheapest fleet for ``spec`` and compare it with the baselines.

    Args:
        catalog: the device/model catalog (spec overrides are applied here).
        traffic: per-service traffic statistics (rate after scaling, token lengths).
        profile: per-replica capacities.
        verifier: simulates each plan; ``None`` leaves every plan unverified.
        progress: called with a short phase description (the CLI shows it).

    Raises:
        InvalidConfigError: a service has no candidate that can meet its SLO.
        MissingFigureError: a device lacks a figure the plan needs (e.g. ATOM's TDP).
    """
    cat = spec_catalog(spec, catalog)
    devices = build_device_types(spec, cat)
    candidates, skipped = enumerate_candidates(spec, cat)
    say = progress or (lambda _msg: None)
    profiles: list[CandidateProfile] = []
    for k, cand in enumerate(candidates, 1):
        say(f"profiling candidate {k}/{len(candidates)}: {cand.label}")
        rate = profile.max_rate_rps(spec.service(cand.service), cand)
        if rate <= 0:
            skipped.append(f"{cand.label}: cannot meet the SLO at any rate")
            continue
        profiles.append(CandidateProfile(candidate=cand, max_rate_rps=rate))
    for svc in spec.services:
        if not any(p.candidate.service == svc.name for p in profiles):
            raise InvalidConfigError(
                f"services[{svc.name}]",
                svc.model,
                "no candidate device/TP/precision can meet this service's SLO",
                hint="; ".join(s for s in skipped if s.startswith(svc.name)) or "relax the SLO",
            )
    ctx = _Context(spec, devices, tuple(profiles), traffic, verifier, say)
    solved = ctx.reconcile({name: ctx.solve_verified(name) for name in ("plan", *BASELINES)})
    say("Pareto front and sensitivity")
    plan = solved["plan"]
    baselines = {name: solved[name] for name in BASELINES}
    headroom = plan.headroom if plan.feasible else ctx.initial_headroom()
    base_problem = ctx.problem("plan", headroom)
    front = tuple(pareto_front(base_problem, pareto_points))
    sensitivity = tuple(
        SensitivityCase(
            name=name,
            demand_factor=d,
            power_cap_factor=c,
            allocation=solve_capacity(base_problem.scaled(demand_factor=d, power_cap_factor=c)),
        )
        for name, d, c in (
            ("as planned", 1.0, 1.0),
            ("traffic x2", 2.0, 1.0),
            ("power cap -20%", 1.0, 0.8),
            ("traffic x2 and cap -20%", 2.0, 0.8),
        )
    )
    assumptions = [*spec.assumption_lines(), *_catalog_assumptions(spec, cat)]
    return PlanResult(
        spec=spec,
        plan=plan,
        baselines=baselines,
        pareto=front,
        sensitivity=sensitivity,
        profiles=tuple(profiles),
        skipped=tuple(skipped),
        device_types=devices,
        traffic=dict(traffic),
        assumptions=tuple(assumptions),
        comparison=(
            *compare_with_rule(spec, plan, baselines),
            *compare_disaggregation(spec, devices, profiles),
        ),
        profile_source=profile_source,
        verifier_source=verifier_source if verifier is not None else "none",
    )


def compare_with_rule(
    spec: PlanSpec, plan: PlanOutcome, baselines: Mapping[str, PlanOutcome]
) -> list[str]:
    """Plain sentences comparing the plan with the 80/20 rule and the single-kind fleets.

    Fleets are compared on the spec's objective (cost, power or the weighted sum); both cost and
    power are quoted.
    """
    rule = baselines.get("80-20")
    share = f"{spec.rule.npu_share:.0%}"
    best_word = {"cost": "cheapest", "power": "least-power", "weighted": "best (weighted)"}[
        spec.objective
    ]
    lines: list[str] = []
    if plan.allocation is None:
        return [f"no fleet meets the traffic under the power cap: {plan.reason}"]
    best = _objective_value(spec, plan.allocation)
    mix = f"{plan.allocation.npu_share:.0%} NPU cards"
    if rule is None or rule.allocation is None:
        lines.append(
            f"The {share} NPU rule cannot meet this traffic under the power cap "
            f"({rule.reason if rule else 'not solved'}); the optimum has {mix}."
        )
    else:
        extra = _objective_value(spec, rule.allocation) / best - 1.0 if best > 0 else 0.0
        if extra <= 1e-3:
            lines.append(
                f"The {share} NPU rule IS the {best_word} here: it matches the optimum "
                f"({_quote(plan.allocation)}, {mix})."
            )
        else:
            lines.append(
                f"The {share} NPU rule is NOT the {best_word} here: it is {extra:.1%} worse "
                f"({_quote(rule.allocation)} vs {_quote(plan.allocation)}); the optimum has "
                f"{mix}."
            )
        if not rule.verified:
            lines.append(f"The {share} fleet was not verified by simulation: {rule.reason}")
    for name in ("all-npu", "all-gpu"):
        base = baselines.get(name)
        if base is None or base.allocation is None:
            lines.append(f"An {name} fleet cannot meet the traffic under the power cap.")
            continue
        extra = _objective_value(spec, base.allocation) / best - 1.0 if best > 0 else 0.0
        lines.append(
            f"An {name} fleet is {extra:+.1%} on the {spec.objective} objective relative to the "
            f"optimum ({_quote(base.allocation)})."
        )
    if not plan.verified:
        lines.append(f"The optimum was NOT verified by simulation: {plan.reason}")
    return lines


def _objective_value(spec: PlanSpec, alloc: Allocation) -> float:
    if spec.objective == "power":
        return alloc.power_w
    if spec.objective == "weighted":
        return alloc.cost_usd_per_hour + alloc.power_w * spec.power_weight_usd_per_kw / 1e3
    return alloc.cost_usd_per_hour


def _quote(alloc: Allocation) -> str:
    return f"{alloc.cost_usd_per_hour:.2f} USD/h, {alloc.power_w / 1e3:.1f} kW"


def compare_disaggregation(
    spec: PlanSpec, devices: Sequence[DeviceType], profiles: Sequence[CandidateProfile]
) -> list[str]:
    """Per service: does GPU-prefill + NPU-decode beat the best single-kind replica per USD?

    Compares the hourly cost of the cards one candidate occupies (server price per card plus the
    card's power at TDP and its share of server overhead, PUE included) per req/s it sustains.
    """
    by_id = {d.device_id: d for d in devices}

    def card_cost(dev: DeviceType) -> float:
        watts = dev.active_power_w + dev.server_overhead_w / dev.cards_per_server
        energy = watts * spec.pue * spec.power_price_usd_per_kwh / 1000.0
        return dev.server_cost_usd_per_hour / dev.cards_per_server + energy

    def usd_per_rps(p: CandidateProfile) -> float:
        cost = sum(card_cost(by_id[d]) * n for d, n in p.candidate.cards.items())
        return cost / p.max_rate_rps

    lines: list[str] = []
    for svc in spec.services:
        mine = [p for p in profiles if p.candidate.service == svc.name]
        dis = [p for p in mine if p.candidate.disaggregated]
        if not dis:
            continue
        best_dis = min(dis, key=usd_per_rps)
        singles: dict[str, CandidateProfile] = {}
        for p in mine:
            if p.candidate.disaggregated:
                continue
            kind = by_id[p.candidate.device_id].kind
            if kind not in singles or usd_per_rps(p) < usd_per_rps(singles[kind]):
                singles[kind] = p
        if not singles:
            continue
        rival = min(singles.values(), key=usd_per_rps)
        verdict = "beats" if usd_per_rps(best_dis) < usd_per_rps(rival) else "does not beat"
        parts = ", ".join(
            f"best {k.upper()}-only {usd_per_rps(p):.3f} ({p.candidate.label})"
            for k, p in sorted(singles.items())
        )
        lines.append(
            f"{svc.name}: disaggregated {best_dis.candidate.label} {verdict} single-kind "
            f"serving: {usd_per_rps(best_dis):.3f} USD/h per req/s vs {parts}."
        )
    return lines


# --- internals ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Context:
    spec: PlanSpec
    devices: tuple[DeviceType, ...]
    profiles: tuple[CandidateProfile, ...]
    traffic: Mapping[str, TrafficStats]
    verifier: Verifier | None
    say: Callable[[str], None] = field(default=lambda _msg: None)
    labels: dict[str, Candidate] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labels = {p.candidate.label: p.candidate for p in self.profiles}

    def initial_headroom(self) -> dict[str, float]:
        return {s.name: self.spec.headroom_for(s.name) for s in self.spec.services}

    def problem(self, variant: str, headroom: Mapping[str, float]) -> CapacityProblem:
        spec = self.spec
        kinds: tuple[Kind, ...] = ("npu", "gpu")
        share: tuple[float, float] | None = None
        devices = self.devices
        if variant == "all-gpu":
            kinds = ("gpu",)
            devices = tuple(
                replace(d, min_servers=0, max_servers=0) if d.kind == "npu" else d for d in devices
            )
        elif variant == "all-npu":
            kinds = ("npu",)
        elif variant == "80-20":
            tol = spec.rule.tolerance_fraction
            share = (max(0.0, spec.rule.npu_share - tol), min(1.0, spec.rule.npu_share + tol))
        job_ids = tuple(sorted({d for j in spec.gpu_jobs for d in j.device_ids}))
        if job_ids:
            job_ids = tuple(self._canonical(d) for d in job_ids)
        return CapacityProblem(
            devices=devices,
            options=tuple(
                ReplicaOption(
                    service=p.candidate.service,
                    label=p.candidate.label,
                    cards=p.candidate.cards,
                    rate_rps=p.max_rate_rps,
                )
                for p in self.profiles
            ),
            demand_rps={
                s.name: self.traffic[s.name].rate_rps * (1.0 + headroom[s.name])
                for s in spec.services
            },
            power_cap_w=spec.power_cap_w,
            power_price_usd_per_kwh=spec.power_price_usd_per_kwh,
            pue=spec.pue,
            gpu_job_cards=sum(j.cards_needed for j in spec.gpu_jobs),
            gpu_job_device_ids=job_ids,
            objective=spec.objective,
            power_weight_usd_per_kw=spec.power_weight_usd_per_kw,
            npu_share_bounds=share,
            allowed_inference_kinds=kinds,
        )

    def fits(self, alloc: Allocation, variant: str) -> bool:
        """Whether ``alloc`` obeys the restriction of ``variant``."""
        kinds = {d.device_id: d.kind for d in self.devices}
        if variant == "all-gpu":
            return all(n == 0 for d, n in alloc.servers.items() if kinds[d] == "npu")
        if variant == "all-npu":
            return all(
                kinds[dev] == "npu" for label in alloc.replicas for dev in self.labels[label].cards
            )
        if variant == "80-20":
            tol = self.spec.rule.tolerance_fraction
            share = self.spec.rule.npu_share
            return share - tol - 1e-9 <= alloc.npu_share <= share + tol + 1e-9
        return True

    def objective_value(self, alloc: Allocation) -> float:
        return _objective_value(self.spec, alloc)

    # NOTE(plan): the verify loop is path-dependent (headroom rises per variant), so one variant
    # can end with a dearer fleet than another variant's verified fleet that also obeys its
    # restriction (e.g. the free plan came out all-GPU and cheaper than the all-GPU baseline).
    # Every verified fleet is a valid answer for each variant whose restriction it obeys, so each
    # variant takes the best verified fleet it may use.
    def reconcile(self, outcomes: Mapping[str, PlanOutcome]) -> dict[str, PlanOutcome]:
        verified = [o for o in outcomes.values() if o.verified and o.allocation is not None]
        out: dict[str, PlanOutcome] = {}
        for name, own in outcomes.items():
            usable = [o for o in verified if o.allocation and self.fits(o.allocation, name)]
            if own.verified:
                usable.append(own)
            if not usable:
                out[name] = own
                continue
            best = min(usable, key=lambda o: self.objective_value(o.allocation))  # type: ignore[arg-type]
            if best is own or (
                own.verified
                and own.allocation is not None
                and self.objective_value(own.allocation) <= self.objective_value(best.allocation)  # type: ignore[arg-type]
            ):
                out[name] = own
            else:
                out[name] = replace(best, name=name, found_by=best.name)
        return out

    def _canonical(self, device_id: str) -> str:
        for opt, dev in zip(self.spec.devices, self.devices, strict=True):
            if opt.device_id == device_id:
                return dev.device_id
        return device_id

    # NOTE(plan): verification loop. Solve, simulate the fleet on the full traffic, and for each
    # service below its attainment target raise that service's headroom (see raised_headroom);
    # at most ``verification.max_rounds`` solves. Headroom only grows, so each re-solve buys
    # capacity.
    def solve_verified(self, variant: str) -> PlanOutcome:
        spec = self.spec
        headroom = self.initial_headroom()
        required = {s.name: self.traffic[s.name].rate_rps for s in spec.services}
        tokens = sum(t.output_tokens_per_s for t in self.traffic.values())

        def outcome(
            alloc: Allocation | None,
            check: Verification | None,
            rounds: int,
            used: Mapping[str, float],
            reason: str = "",
        ) -> PlanOutcome:
            return PlanOutcome(
                name=variant,
                allocation=alloc,
                verified=check is not None and not reason,
                verification=check,
                rounds=rounds,
                headroom=dict(used),
                required_rps=required,
                output_tokens_per_s=tokens,
                reason=reason,
            )

        last: tuple[Allocation, Verification, dict[str, float]] | None = None
        for round_no in range(1, spec.verification.max_rounds + 1):
            self.say(f"{variant}: solve and verify, round {round_no}")
            alloc = solve_capacity(self.problem(variant, headroom))
            if alloc is None:
                reason = "no fleet within the server limits meets the demand under the power cap"
                if last is None:
                    return outcome(None, None, round_no, headroom, reason)
                reason += f" once headroom rose to {_fmt_headroom(headroom)}"
                return outcome(last[0], last[1], round_no, last[2], reason)
            if self.verifier is None:
                return outcome(alloc, None, round_no, headroom, "not simulated (verification off)")
            check = self.verifier.verify(spec, alloc, self.labels)
            missing = [
                s.name
                for s in spec.services
                if check.slo_attainment.get(s.name, 0.0) < s.slo.attainment_fraction
            ]
            if not missing:
                return outcome(alloc, check, round_no, headroom)
            last = (alloc, check, dict(headroom))
            for name in missing:
                headroom[name] = raised_headroom(
                    headroom[name],
                    check.slo_attainment.get(name, 0.0),
                    spec.service(name).slo.attainment_fraction,
                    spec.verification.headroom_step_fraction,
                )
        assert last is not None
        rounds = spec.verification.max_rounds
        reason = f"SLO still missed after {rounds} rounds (headroom {_fmt_headroom(last[2])})"
        return outcome(last[0], last[1], rounds, last[2], reason)


def raised_headroom(headroom: float, attained: float, target: float, step_fraction: float) -> float:
    """The headroom for the next round: one step per 5 points of missed attainment (1 to 4
    steps), applied multiplicatively to the covered rate ``1 + headroom``."""
    gap = max(0.0, target - attained)
    steps = min(4, max(1, math.ceil(gap / 0.05 - 1e-9)))
    return (1.0 + headroom) * (1.0 + step_fraction * steps) - 1.0


def _fmt_headroom(headroom: Mapping[str, float]) -> str:
    return ", ".join(f"{k} {v:.0%}" for k, v in headroom.items())


def _first_runnable(
    catalog: Catalog,
    svc: ServiceSpec,
    device_id: str,
    tp: int,
    *,
    also: tuple[str, int] | None = None,
) -> tuple[str | None, str]:
    """The first of the service's precisions the perf model can run here, or why none can."""
    reasons: list[str] = []
    for precision in svc.precisions:
        try:
            build_perf_model(catalog, model=svc.model, device=device_id, precision=precision, tp=tp)
            if also is not None:
                build_perf_model(
                    catalog, model=svc.model, device=also[0], precision=precision, tp=also[1]
                )
        except (
            MissingFigureError,
            ModelDoesNotFitError,
            NotSupportedError,
            InvalidConfigError,
        ) as exc:
            reasons.append(f"{precision}: {exc.message}")
            continue
        except NotFoundError:
            raise
        return precision, ""
    return None, "; ".join(reasons)


def _catalog_assumptions(spec: PlanSpec, catalog: Catalog) -> Sequence[str]:
    out: list[str] = []
    for opt in spec.devices:
        dev = catalog.device(opt.device_id)
        for name in dev.assumed:
            out.append(
                f"{dev.device_id}.{name}={getattr(dev, name)} is user-supplied "
                f"({'; '.join(dev.assumption_sources)}), not a sourced figure"
            )
        if dev.idle_w is None and opt.idle_power_fraction is None:
            out.append(
                f"{dev.device_id}: idle power {IDLE_POWER_FRACTION:.0%} of TDP "
                "(perf-model default; no sourced idle figure)"
            )
    return out
