"""The capacity MILP: whole servers per device type and replicas per candidate, solved by HiGHS.

Pure numbers in, an :class:`Allocation` out; nothing here knows about models or simulators (the
replica capacities arrive in :class:`ReplicaOption`). ``solve_capacity`` returns ``None`` when no
fleet within the bounds meets the demand under the power cap.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from npucenter.errors import InvalidConfigError

__all__ = [
    "Allocation",
    "CapacityProblem",
    "DeviceType",
    "ReplicaOption",
    "pareto_front",
    "solve_capacity",
]

Kind = Literal["npu", "gpu"]


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceType:
    """A device type as the MILP sees it: server size, price and per-card power."""

    device_id: str
    kind: Kind
    cards_per_server: int
    server_cost_usd_per_hour: float
    active_power_w: float  # per busy card (TDP: the conservative planning figure)
    idle_power_w: float  # per unused card
    server_overhead_w: float = 0.0  # per server, whatever its cards do
    min_servers: int = 0
    max_servers: int = 1000

    def __post_init__(self) -> None:
        if self.kind not in ("npu", "gpu"):
            raise InvalidConfigError("device.kind", self.kind, "must be npu or gpu")
        if self.cards_per_server < 1:
            raise InvalidConfigError("device.cards_per_server", self.cards_per_server, "< 1")
        if not 0 <= self.idle_power_w <= self.active_power_w:
            raise InvalidConfigError(
                "device.idle_power_w", self.idle_power_w, "needs 0 <= idle <= active power"
            )
        if not 0 <= self.min_servers <= self.max_servers:
            raise InvalidConfigError("device.min_servers", self.min_servers, "> max_servers")

    @property
    def server_base_power_w(self) -> float:
        """Power of one server with every card idle."""
        return self.cards_per_server * self.idle_power_w + self.server_overhead_w


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaOption:
    """One way to serve a service: a replica (or disaggregated unit) and the rate it sustains."""

    service: str
    label: str  # unique within a problem, e.g. "chat@furiosa_rngd tp1 fp8"
    cards: Mapping[str, int]  # device_id -> cards one replica occupies
    rate_rps: float  # highest rate one replica serves within the service's SLO

    def __post_init__(self) -> None:
        if not self.cards or any(n < 1 for n in self.cards.values()):
            raise InvalidConfigError("option.cards", dict(self.cards), "needs >= 1 card")
        if not (math.isfinite(self.rate_rps) and self.rate_rps >= 0):
            raise InvalidConfigError("option.rate_rps", self.rate_rps, "must be >= 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class CapacityProblem:
    """A whole MILP instance.

    ``demand_rps`` already includes headroom. ``npu_share_bounds`` pins the share of NPU cards
    among all cards (the 80/20 rule); ``allowed_inference_kinds`` restricts where replicas may run
    (the all-GPU and all-NPU baselines).
    """

    devices: tuple[DeviceType, ...]
    options: tuple[ReplicaOption, ...]
    demand_rps: Mapping[str, float]  # service -> rate to cover
    power_cap_w: float
    power_price_usd_per_kwh: float = 0.0
    pue: float = 1.0
    gpu_job_cards: float = 0.0  # average GPU cards that non-inference jobs keep busy
    gpu_job_device_ids: tuple[str, ...] = ()  # () = every GPU device type
    objective: Literal["cost", "power", "weighted"] = "cost"
    power_weight_usd_per_kw: float = 0.0
    npu_share_bounds: tuple[float, float] | None = None
    allowed_inference_kinds: tuple[Kind, ...] = ("npu", "gpu")
    time_limit_s: float = 20.0
    labels: Mapping[str, str] = field(default_factory=dict)  # free annotations

    def __post_init__(self) -> None:
        ids = [d.device_id for d in self.devices]
        if len(set(ids)) != len(ids):
            raise InvalidConfigError("devices", ids, "device ids must be unique")
        labels = [o.label for o in self.options]
        if len(set(labels)) != len(labels):
            raise InvalidConfigError("options", labels, "option labels must be unique")
        for opt in self.options:
            for dev in opt.cards:
                if dev not in ids:
                    raise InvalidConfigError("option.cards", dev, f"not a device of {ids}")
        for svc, rate in self.demand_rps.items():
            if not (math.isfinite(rate) and rate >= 0):
                raise InvalidConfigError(f"demand_rps.{svc}", rate, "must be >= 0")
        if self.power_cap_w <= 0:
            raise InvalidConfigError("power_cap_w", self.power_cap_w, "must be > 0")

    def scaled(self, demand_factor: float = 1.0, power_cap_factor: float = 1.0) -> CapacityProblem:
        """The same problem with every demand and/or the power cap multiplied."""
        return replace(
            self,
            demand_rps={k: v * demand_factor for k, v in self.demand_rps.items()},
            power_cap_w=self.power_cap_w * power_cap_factor,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Allocation:
    """An optimal fleet: servers, replicas, GPU cards held for jobs, and what it costs."""

    servers: Mapping[str, int]  # device_id -> servers
    replicas: Mapping[str, int]  # option label -> replicas (zeros omitted)
    job_cards: Mapping[str, int]  # device_id -> GPU cards reserved for jobs
    cards_used: Mapping[str, int]  # device_id -> cards busy (replicas + jobs)
    capacity_rps: Mapping[str, float]  # service -> rate the replicas sustain
    power_w: float  # facility power at the planning figures (busy cards at TDP), PUE included
    cost_usd_per_hour: float  # servers + power
    npu_share: float  # NPU cards / all cards

    spare_cards: Mapping[str, int]  # device_id -> cards bought but idle


def solve_capacity(problem: CapacityProblem) -> Allocation | None:
    """Solve the MILP; ``None`` when no fleet within the bounds meets the demand under the cap.

    Example:
        >>> dev = DeviceType(device_id="a", kind="npu", cards_per_server=8,
        ...     server_cost_usd_per_hour=10, active_power_w=100, idle_power_w=30)
        >>> opt = ReplicaOption(service="s", label="s@a", cards={"a": 1}, rate_rps=2.0)
        >>> alloc = solve_capacity(CapacityProblem(devices=(dev,), options=(opt,),
        ...     demand_rps={"s": 20.0}, power_cap_w=1e6))
        >>> alloc.servers["a"], alloc.replicas["s@a"]
        (2, 10)
    """
    from scipy.optimize import Bounds, LinearConstraint, milp  # heavy: only when solving

    model = _Model.build(problem)
    res = milp(
        c=model.objective,
        integrality=np.ones(model.num_vars),
        bounds=Bounds(model.lower, model.upper),
        constraints=[LinearConstraint(model.a, model.lo, model.hi)],
        options={"disp": False, "mip_rel_gap": 1e-7, "time_limit": problem.time_limit_s},
    )
    if res.x is None or res.status not in (0, 1):
        return None
    return model.decode(np.round(res.x).astype(int))


def pareto_front(problem: CapacityProblem, num_points: int = 8) -> list[Allocation]:
    """Cost–power trade-off: the cheapest fleet at caps from the least-power fleet upwards.

    Returns non-dominated allocations sorted by power (first: least power; last: least cost).
    """
    least_power = solve_capacity(replace(problem, objective="power"))
    cheapest = solve_capacity(replace(problem, objective="cost"))
    if least_power is None or cheapest is None:
        return []
    low, high = least_power.power_w, cheapest.power_w
    points = [least_power, cheapest]
    if high > low and num_points > 2:
        for cap in np.linspace(low, high, num_points)[1:-1]:
            alloc = solve_capacity(replace(problem, objective="cost", power_cap_w=float(cap)))
            if alloc is not None:
                points.append(alloc)
    points.sort(key=lambda a: (a.power_w, a.cost_usd_per_hour))
    front: list[Allocation] = []
    for alloc in points:
        if not front or alloc.cost_usd_per_hour < front[-1].cost_usd_per_hour - 1e-9:
            front.append(alloc)
    return front


# --- the model --------------------------------------------------------------------------


@dataclass(slots=True)
class _Model:
    """Variable layout: [servers per device | replicas per option | job cards per device]."""

    problem: CapacityProblem
    objective: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    a: np.ndarray
    lo: np.ndarray
    hi: np.ndarray

    @property
    def num_vars(self) -> int:
        return int(self.objective.shape[0])

    # NOTE(plan): power is linear in the integers. A server costs its idle cards plus overhead;
    # each busy card (replica or job) adds (active - idle). Cost = server prices + power price x
    # power. The 80/20 share is two linear rows on NPU cards versus all cards.
    @classmethod
    def build(cls, p: CapacityProblem) -> _Model:
        nd, no = len(p.devices), len(p.options)
        n = nd + no + nd
        dev_index = {d.device_id: i for i, d in enumerate(p.devices)}
        power = np.zeros(n)  # facility W per unit of each variable
        cost = np.zeros(n)  # USD/h per unit, power excluded
        for i, dev in enumerate(p.devices):
            power[i] = dev.server_base_power_w * p.pue
            cost[i] = dev.server_cost_usd_per_hour
            power[nd + no + i] = (dev.active_power_w - dev.idle_power_w) * p.pue
        for k, opt in enumerate(p.options):
            power[nd + k] = p.pue * sum(
                (p.devices[dev_index[d]].active_power_w - p.devices[dev_index[d]].idle_power_w) * c
                for d, c in opt.cards.items()
            )
        total_cost = cost + power * p.power_price_usd_per_kwh / 1000.0
        if p.objective == "cost":
            objective = total_cost
        elif p.objective == "power":
            objective = power + 1e-6 * total_cost
        else:
            objective = total_cost + power * p.power_weight_usd_per_kw / 1000.0

        lower = np.zeros(n)
        upper = np.zeros(n)
        for i, dev in enumerate(p.devices):
            lower[i], upper[i] = dev.min_servers, dev.max_servers
            job_ok = dev.kind == "gpu" and (
                not p.gpu_job_device_ids or dev.device_id in p.gpu_job_device_ids
            )
            upper[nd + no + i] = dev.max_servers * dev.cards_per_server if job_ok else 0
        for k, opt in enumerate(p.options):
            allowed = all(
                p.devices[dev_index[d]].kind in p.allowed_inference_kinds for d in opt.cards
            )
            usable = allowed and opt.rate_rps > 0 and opt.service in p.demand_rps
            upper[nd + k] = _max_replicas(p, opt, dev_index) if usable else 0

        rows, lo, hi = _constraint_rows(p, power, dev_index)
        return cls(p, objective, lower, upper, np.array(rows).reshape(-1, n), lo, hi)

    def decode(self, x: np.ndarray) -> Allocation:
        p = self.problem
        nd, no = len(p.devices), len(p.options)
        servers = {d.device_id: int(x[i]) for i, d in enumerate(p.devices)}
        jobs = {d.device_id: int(x[nd + no + i]) for i, d in enumerate(p.devices)}
        replicas = {o.label: int(x[nd + k]) for k, o in enumerate(p.options) if x[nd + k] > 0}
        used = dict(jobs)
        capacity = {s: 0.0 for s in p.demand_rps}
        for k, opt in enumerate(p.options):
            count = int(x[nd + k])
            for dev, cards in opt.cards.items():
                used[dev] += cards * count
            capacity[opt.service] = capacity.get(opt.service, 0.0) + opt.rate_rps * count
        spare = {
            d.device_id: servers[d.device_id] * d.cards_per_server - used[d.device_id]
            for d in p.devices
        }
        total = sum(servers[d.device_id] * d.cards_per_server for d in p.devices)
        npu = sum(servers[d.device_id] * d.cards_per_server for d in p.devices if d.kind == "npu")
        power_w = 0.0
        for dtype in p.devices:
            power_w += servers[dtype.device_id] * dtype.server_base_power_w
            power_w += used[dtype.device_id] * (dtype.active_power_w - dtype.idle_power_w)
        power_w *= p.pue
        cost = sum(servers[d.device_id] * d.server_cost_usd_per_hour for d in p.devices)
        cost += power_w * p.power_price_usd_per_kwh / 1000.0
        return Allocation(
            servers=servers,
            replicas=replicas,
            job_cards={k: v for k, v in jobs.items() if v > 0},
            cards_used=used,
            capacity_rps=capacity,
            power_w=power_w,
            cost_usd_per_hour=cost,
            npu_share=npu / total if total else 0.0,
            spare_cards=spare,
        )


def _max_replicas(p: CapacityProblem, opt: ReplicaOption, dev_index: Mapping[str, int]) -> float:
    return float(
        min(
            p.devices[dev_index[d]].max_servers * p.devices[dev_index[d]].cards_per_server // c
            for d, c in opt.cards.items()
        )
    )


def _constraint_rows(
    p: CapacityProblem, power: np.ndarray, dev_index: Mapping[str, int]
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    nd, no = len(p.devices), len(p.options)
    n = nd + no + nd
    rows: list[np.ndarray] = []
    lo: list[float] = []
    hi: list[float] = []
    # cards: replicas + jobs on a device type fit in its servers
    for i, dev in enumerate(p.devices):
        row = np.zeros(n)
        row[i] = -dev.cards_per_server
        for k, opt in enumerate(p.options):
            row[nd + k] = opt.cards.get(dev.device_id, 0)
        row[nd + no + i] = 1
        rows.append(row)
        lo.append(-np.inf)
        hi.append(0.0)
    # coverage: each service's rate
    for svc, rate in p.demand_rps.items():
        row = np.zeros(n)
        for k, opt in enumerate(p.options):
            if opt.service == svc:
                row[nd + k] = opt.rate_rps
        rows.append(row)
        lo.append(rate)
        hi.append(np.inf)
    # GPU jobs
    if p.gpu_job_cards > 0:
        row = np.zeros(n)
        row[nd + no : nd + no + nd] = 1
        rows.append(row)
        lo.append(p.gpu_job_cards)
        hi.append(np.inf)
    # power cap
    rows.append(power.copy())
    lo.append(-np.inf)
    hi.append(p.power_cap_w)
    # NPU share of cards
    if p.npu_share_bounds is not None:
        low, high = p.npu_share_bounds
        for bound, sense in ((low, 1), (high, -1)):
            row = np.zeros(n)
            for i, dev in enumerate(p.devices):
                npu = 1.0 if dev.kind == "npu" else 0.0
                row[i] = sense * (npu - bound) * dev.cards_per_server
            rows.append(row)
            lo.append(0.0)
            hi.append(np.inf)
    return rows, np.array(lo), np.array(hi)
