"""The capacity-plan spec: services, candidate device types, prices, power cap, GPU job demand.

A spec is plain data parsed from a mapping (the CLI reads the YAML file); this module does no
I/O. Prices and power prices are *user assumptions*, never catalog data: every spec states them,
and every report prints them back (:meth:`PlanSpec.assumption_lines`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from npucenter.errors import InvalidConfigError
from npucenter.workload.slo import slo_from_spec

__all__ = [
    "DeviceOption",
    "DisaggregationSpec",
    "GpuJobDemand",
    "Objective",
    "PlanSpec",
    "RuleSpec",
    "ServiceSpec",
    "SloSpec",
    "TrafficSpec",
    "VerificationSpec",
    "parse_plan_spec",
]

Objective = Literal["cost", "power", "weighted"]
_OBJECTIVES: tuple[str, ...] = ("cost", "power", "weighted")


@dataclass(frozen=True, slots=True, kw_only=True)
class SloSpec:
    """Latency limits of one service: a request is good when it meets both.

    ``attainment_fraction`` is the share of requests that must be good (e.g. 0.9 for a p90 SLO).
    """

    ttft_s: float
    tpot_s: float
    attainment_fraction: float = 0.9
    source: str = ""  # where the limits come from (a preset's citation)

    def __post_init__(self) -> None:
        _positive("slo.ttft_s", self.ttft_s)
        _positive("slo.tpot_s", self.tpot_s)
        _fraction("slo.attainment_fraction", self.attainment_fraction, open_low=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class TrafficSpec:
    """A service's traffic: a shipped trace replayed at ``rate_scale``, or a Poisson rate.

    For a trace, the rate and mean lengths are measured from the trace by the caller
    (:func:`npucenter.plan.traffic.resolve_traffic`); for a synthetic stream they are given.
    """

    trace: str | None = None  # shipped trace name ("conv", "code") or None for synthetic
    rate_scale: float = 1.0  # trace replayed at this multiple of its recorded rate
    rate_rps: float | None = None  # synthetic Poisson rate (no trace)
    mean_input_tokens: float | None = None
    mean_output_tokens: float | None = None

    def __post_init__(self) -> None:
        _positive("traffic.rate_scale", self.rate_scale)
        if self.trace is None:
            for name in ("rate_rps", "mean_input_tokens", "mean_output_tokens"):
                value = getattr(self, name)
                if value is None:
                    raise InvalidConfigError(
                        f"traffic.{name}",
                        None,
                        "required when no trace is named",
                        hint="give `trace: conv|code` or rate_rps with mean token lengths",
                    )
                _positive(f"traffic.{name}", value)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceSpec:
    """One inference service to plan for: model, precisions and TP degrees to try, traffic, SLO.

    A device that supports none of ``precisions`` is not a candidate for this service.
    """

    name: str
    model: str
    precisions: tuple[str, ...] = ("fp8",)
    tp_options: tuple[int, ...] = (1,)
    traffic: TrafficSpec
    slo: SloSpec
    headroom_fraction: float | None = None  # None: the spec-wide headroom

    def __post_init__(self) -> None:
        _name("service.name", self.name)
        if not self.precisions:
            raise InvalidConfigError("service.precision", self.precisions, "needs one or more")
        if not self.tp_options or any(tp < 1 for tp in self.tp_options):
            raise InvalidConfigError("service.tp", self.tp_options, "needs TP degrees >= 1")
        if self.headroom_fraction is not None and self.headroom_fraction < 0:
            raise InvalidConfigError(
                "service.headroom_fraction", self.headroom_fraction, "must be >= 0"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceOption:
    """A device type the plan may buy, in whole servers, with its price assumption.

    ``overrides`` supplies figures the catalog lacks (e.g. Rebellions ATOM's memory bandwidth and
    TDP); they need ``override_source`` and are reported as assumptions.
    """

    device_id: str
    server_cost_usd_per_hour: float  # amortised capex (+ hosting) of one server, an assumption
    cards_per_server: int | None = None  # None: the catalog's host_cards_per_server
    server_overhead_w: float = 0.0  # host CPUs, fans, NICs per server (assumption)
    idle_power_fraction: float | None = None  # None: the perf model's idle power
    min_servers: int = 0  # inventory already bought
    max_servers: int = 1000
    overrides: Mapping[str, float] = field(default_factory=dict)  # catalog field -> value
    override_source: str = ""
    cost_source: str = ""

    def __post_init__(self) -> None:
        _name("device.device", self.device_id)
        if self.server_cost_usd_per_hour < 0:
            raise InvalidConfigError(
                "device.server_cost_usd_per_hour", self.server_cost_usd_per_hour, "must be >= 0"
            )
        if self.cards_per_server is not None and self.cards_per_server < 1:
            raise InvalidConfigError("device.cards_per_server", self.cards_per_server, "< 1")
        if self.server_overhead_w < 0:
            raise InvalidConfigError("device.server_overhead_w", self.server_overhead_w, "< 0")
        if self.idle_power_fraction is not None:
            _fraction("device.idle_power_fraction", self.idle_power_fraction)
        if not 0 <= self.min_servers <= self.max_servers:
            raise InvalidConfigError(
                "device.min_servers",
                self.min_servers,
                f"needs 0 <= min_servers <= max_servers ({self.max_servers})",
            )
        if self.overrides and not self.override_source.strip():
            raise InvalidConfigError(
                "device.override_source",
                self.override_source,
                "overrides of catalog figures need a stated source or 'assumption: ...'",
            )
        for key, value in self.overrides.items():
            _positive(f"device.overrides.{key}", value)


@dataclass(frozen=True, slots=True, kw_only=True)
class GpuJobDemand:
    """Non-inference GPU work (fine-tuning, preprocessing) in GPU-hours per day."""

    name: str
    gpu_hours_per_day: float
    device_ids: tuple[str, ...] = ()  # () = any GPU device type of the spec
    max_utilisation_fraction: float = 1.0  # jobs rarely pack cards perfectly

    def __post_init__(self) -> None:
        _name("gpu_jobs.name", self.name)
        if self.gpu_hours_per_day < 0:
            raise InvalidConfigError("gpu_jobs.gpu_hours_per_day", self.gpu_hours_per_day, "< 0")
        _fraction("gpu_jobs.max_utilisation_fraction", self.max_utilisation_fraction, True)

    @property
    def cards_needed(self) -> float:
        """Average GPU cards the demand keeps busy, after the utilisation allowance."""
        return self.gpu_hours_per_day / 24.0 / self.max_utilisation_fraction


@dataclass(frozen=True, slots=True, kw_only=True)
class DisaggregationSpec:
    """A disaggregated candidate: prefill on one device type, decode on another."""

    prefill_device_id: str
    decode_device_id: str
    prefill_tp: int = 1
    decode_tp: int = 1
    decode_per_prefill: tuple[int, ...] = (1, 2, 4)  # decode replicas per prefill replica
    services: tuple[str, ...] = ()  # () = every service
    kv_link_gbps: float = 50.0  # KV transfer bandwidth between servers (GB/s), an assumption

    def __post_init__(self) -> None:
        if self.prefill_tp < 1 or self.decode_tp < 1:
            raise InvalidConfigError("disaggregation.tp", (self.prefill_tp, self.decode_tp), "< 1")
        if not self.decode_per_prefill or min(self.decode_per_prefill) < 1:
            raise InvalidConfigError(
                "disaggregation.decode_per_prefill", self.decode_per_prefill, "needs ints >= 1"
            )
        _positive("disaggregation.kv_link_gbps", self.kv_link_gbps)


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleSpec:
    """The fixed-share rule of thumb the plan is compared with (default 80 % NPU cards)."""

    npu_share: float = 0.8
    tolerance_fraction: float = 0.05  # servers are whole: the share may miss by this much

    def __post_init__(self) -> None:
        _fraction("rule.npu_share", self.npu_share)
        _fraction("rule.tolerance_fraction", self.tolerance_fraction)


@dataclass(frozen=True, slots=True, kw_only=True)
class VerificationSpec:
    """The simulate-and-re-solve loop: at most ``max_rounds`` solves."""

    max_rounds: int = 3
    headroom_step_fraction: float = 0.15  # added to a missing service's headroom per round
    max_requests: int | None = None  # simulate only the first N requests of each stream
    routing: str = "least-outstanding-tokens"  # the simulator center's routing policy

    def __post_init__(self) -> None:
        if self.max_rounds < 1:
            raise InvalidConfigError("verification.max_rounds", self.max_rounds, "< 1")
        _positive("verification.headroom_step_fraction", self.headroom_step_fraction)
        if self.max_requests is not None and self.max_requests < 1:
            raise InvalidConfigError("verification.max_requests", self.max_requests, "< 1")


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanSpec:
    """Everything the planner needs; parsed by :func:`parse_plan_spec`."""

    name: str
    services: tuple[ServiceSpec, ...]
    devices: tuple[DeviceOption, ...]
    power_cap_w: float
    power_price_usd_per_kwh: float
    pue: float = 1.0  # facility power / IT power
    gpu_jobs: tuple[GpuJobDemand, ...] = ()
    disaggregation: tuple[DisaggregationSpec, ...] = ()
    objective: Objective = "cost"
    power_weight_usd_per_kw: float = 0.0  # the weight of power in the "weighted" objective
    headroom_fraction: float = 0.1  # rate covered = required rate x (1 + headroom)
    rule: RuleSpec = field(default_factory=RuleSpec)
    verification: VerificationSpec = field(default_factory=VerificationSpec)
    assumptions: tuple[str, ...] = ()  # free text stated by the spec's author
    power_price_source: str = ""

    def __post_init__(self) -> None:
        _name("name", self.name)
        if not self.services:
            raise InvalidConfigError("services", [], "a plan needs at least one service")
        if not self.devices:
            raise InvalidConfigError("devices", [], "a plan needs at least one device type")
        _unique("services", [s.name for s in self.services])
        _unique("devices", [d.device_id for d in self.devices])
        _unique("gpu_jobs", [j.name for j in self.gpu_jobs])
        _positive("power_cap_w", self.power_cap_w)
        if self.power_price_usd_per_kwh < 0:
            raise InvalidConfigError("power_price_usd_per_kwh", self.power_price_usd_per_kwh, "<0")
        if self.pue < 1.0:
            raise InvalidConfigError("pue", self.pue, "a PUE is >= 1")
        if self.objective not in _OBJECTIVES:
            raise InvalidConfigError(
                "objective", self.objective, f"must be one of {', '.join(_OBJECTIVES)}"
            )
        if self.headroom_fraction < 0:
            raise InvalidConfigError("headroom_fraction", self.headroom_fraction, "must be >= 0")
        ids = {d.device_id for d in self.devices}
        names = {s.name for s in self.services}
        for dis in self.disaggregation:
            for dev in (dis.prefill_device_id, dis.decode_device_id):
                if dev not in ids:
                    raise InvalidConfigError(
                        "disaggregation.device", dev, f"not among the spec's devices {sorted(ids)}"
                    )
            for svc in dis.services:
                if svc not in names:
                    raise InvalidConfigError("disaggregation.services", svc, "unknown service")
        for job in self.gpu_jobs:
            for dev in job.device_ids:
                if dev not in ids:
                    raise InvalidConfigError(
                        "gpu_jobs.devices", dev, f"not among the spec's devices {sorted(ids)}"
                    )

    def service(self, name: str) -> ServiceSpec:
        """The service called ``name``."""
        for svc in self.services:
            if svc.name == name:
                return svc
        raise InvalidConfigError("service", name, f"not in {[s.name for s in self.services]}")

    def headroom_for(self, service: str) -> float:
        """The headroom fraction of one service (its own, or the spec-wide one)."""
        own = self.service(service).headroom_fraction
        return self.headroom_fraction if own is None else own

    def assumption_lines(self) -> list[str]:
        """Every assumption the spec makes, one human-readable line each (printed in reports)."""
        lines = [
            f"power price {self.power_price_usd_per_kwh:g} USD/kWh"
            + (f" (source: {self.power_price_source})" if self.power_price_source else ""),
            f"PUE {self.pue:g} (facility power = IT power x PUE)",
            f"power cap {self.power_cap_w:g} W, counted at card TDP for used cards, "
            "idle power for unused cards, plus server overhead",
            f"headroom {self.headroom_fraction:.0%} over each service's required rate",
        ]
        for dev in self.devices:
            src = f" (source: {dev.cost_source})" if dev.cost_source else " (no source: assumed)"
            idle = (
                "perf-model idle power"
                if dev.idle_power_fraction is None
                else f"idle {dev.idle_power_fraction:.0%} of TDP"
            )
            lines.append(
                f"{dev.device_id}: server cost {dev.server_cost_usd_per_hour:g} USD/h{src}; "
                f"{idle}; server overhead {dev.server_overhead_w:g} W per server"
            )
            if dev.overrides:
                figures = ", ".join(f"{k}={v:g}" for k, v in sorted(dev.overrides.items()))
                lines.append(
                    f"{dev.device_id}: user-supplied figures not in the sourced catalog: "
                    f"{figures} (source: {dev.override_source})"
                )
        for svc in self.services:
            src = f" (limits: {svc.slo.source})" if svc.slo.source else ""
            lines.append(
                f"{svc.name}: SLO TTFT <= {svc.slo.ttft_s:g} s and TPOT <= {svc.slo.tpot_s:g} s "
                f"for {svc.slo.attainment_fraction:.0%} of requests{src}"
            )
        for dis in self.disaggregation:
            lines.append(
                f"disaggregated {dis.prefill_device_id} prefill -> {dis.decode_device_id} decode: "
                f"KV transfer at {dis.kv_link_gbps:g} GB/s"
            )
        lines.extend(self.assumptions)
        return lines


def parse_plan_spec(data: Mapping[str, Any]) -> PlanSpec:
    """Build a :class:`PlanSpec` from a parsed YAML/JSON mapping.

    Unknown keys are errors (a typo must not silently drop a constraint).

    Raises:
        InvalidConfigError: naming the field path, e.g. ``services[1].slo.ttft_s``.
    """
    root = _Obj(data, "spec")
    power = root.get_obj("power")
    spec = PlanSpec(
        name=root.get_str("name"),
        services=tuple(_parse_service(s) for s in root.get_list("services")),
        devices=tuple(_parse_device(d) for d in root.get_list("devices")),
        power_cap_w=power.get_float("cap_w"),
        power_price_usd_per_kwh=power.get_float("price_usd_per_kwh"),
        pue=power.get_float("pue", 1.0),
        power_price_source=power.get_str("price_source", ""),
        gpu_jobs=tuple(_parse_job(j) for j in root.get_list("gpu_jobs", [])),
        disaggregation=tuple(_parse_disagg(d) for d in root.get_list("disaggregation", [])),
        objective=root.get_str("objective", "cost"),
        power_weight_usd_per_kw=root.get_float("power_weight_usd_per_kw", 0.0),
        headroom_fraction=root.get_float("headroom_fraction", 0.1),
        rule=_parse_rule(root.get_opt_obj("rule")),
        verification=_parse_verification(root.get_opt_obj("verification")),
        assumptions=tuple(str(a) for a in root.get_list("assumptions", [])),
    )
    power.done()
    root.done()
    return spec


# --- parsing helpers ----------------------------------------------------------------------


class _Obj:
    """A mapping being parsed: typed getters with field paths; ``done()`` rejects leftovers."""

    def __init__(self, data: Any, path: str) -> None:
        if not isinstance(data, Mapping):
            raise InvalidConfigError(path, data, "expected a mapping")
        self.data = data
        self.path = path
        self.used: set[str] = set()

    def _get(self, key: str, default: Any) -> Any:
        self.used.add(key)
        if key in self.data and self.data[key] is not None:
            return self.data[key]
        if default is _REQUIRED:
            raise InvalidConfigError(f"{self.path}.{key}", None, "is required")
        return default

    def get_str(self, key: str, default: Any = None) -> Any:
        value = self._get(key, _REQUIRED if default is None else default)
        if not isinstance(value, str):
            raise InvalidConfigError(f"{self.path}.{key}", value, "expected a string")
        return value

    def get_opt_str(self, key: str) -> str | None:
        value = self._get(key, None)
        if value is not None and not isinstance(value, str):
            raise InvalidConfigError(f"{self.path}.{key}", value, "expected a string")
        return value

    def get_float(self, key: str, default: Any = None) -> Any:
        value = self._get(key, _REQUIRED if default is None else default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidConfigError(f"{self.path}.{key}", value, "expected a number")
        if not math.isfinite(value):
            raise InvalidConfigError(f"{self.path}.{key}", value, "must be finite")
        return float(value)

    def get_opt_float(self, key: str) -> float | None:
        if self.data.get(key) is None:
            self.used.add(key)
            return None
        return float(self.get_float(key))

    def get_int(self, key: str, default: Any = None) -> Any:
        value = self._get(key, _REQUIRED if default is None else default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidConfigError(f"{self.path}.{key}", value, "expected an integer")
        return value

    def get_opt_int(self, key: str) -> int | None:
        if self.data.get(key) is None:
            self.used.add(key)
            return None
        return int(self.get_int(key))

    def get_ints(self, key: str, default: Sequence[int]) -> tuple[int, ...]:
        value = self._get(key, list(default))
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise InvalidConfigError(f"{self.path}.{key}", value, "expected integers")
        return tuple(value)

    def get_strs(self, key: str) -> tuple[str, ...]:
        value = self._get(key, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidConfigError(f"{self.path}.{key}", value, "expected strings")
        return tuple(value)

    def get_list(self, key: str, default: Any = None) -> list[Any]:
        value = self._get(key, _REQUIRED if default is None else default)
        if not isinstance(value, list):
            raise InvalidConfigError(f"{self.path}.{key}", value, "expected a list")
        return value

    def get_obj(self, key: str) -> _Obj:
        return _Obj(self._get(key, _REQUIRED), f"{self.path}.{key}")

    def get_opt_obj(self, key: str) -> _Obj | None:
        value = self._get(key, None)
        return None if value is None else _Obj(value, f"{self.path}.{key}")

    def get_numbers(self, key: str) -> dict[str, float]:
        value = self._get(key, {})
        if not isinstance(value, Mapping):
            raise InvalidConfigError(f"{self.path}.{key}", value, "expected a mapping")
        out: dict[str, float] = {}
        for k, v in value.items():
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise InvalidConfigError(f"{self.path}.{key}.{k}", v, "expected a number")
            out[str(k)] = float(v)
        return out

    def done(self) -> None:
        extra = sorted(set(map(str, self.data)) - self.used)
        if extra:
            raise InvalidConfigError(
                f"{self.path}.{extra[0]}",
                self.data[extra[0]],
                "unknown key",
                hint=f"known keys here: {', '.join(sorted(self.used))}",
            )


_REQUIRED: Any = object()


def _parse_service(data: Any) -> ServiceSpec:
    obj = _Obj(data, "services[]")
    obj.path = f"services[{obj.data.get('name', '?')}]"
    traffic = obj.get_obj("traffic")
    slo = obj.get_obj("slo")
    svc = ServiceSpec(
        name=obj.get_str("name"),
        model=obj.get_str("model"),
        precisions=obj.get_strs("precision") or ("fp8",),
        tp_options=obj.get_ints("tp", (1,)),
        headroom_fraction=obj.get_opt_float("headroom_fraction"),
        traffic=TrafficSpec(
            trace=traffic.get_opt_str("trace"),
            rate_scale=traffic.get_float("rate_scale", 1.0),
            rate_rps=traffic.get_opt_float("rate_rps"),
            mean_input_tokens=traffic.get_opt_float("mean_input_tokens"),
            mean_output_tokens=traffic.get_opt_float("mean_output_tokens"),
        ),
        slo=_parse_slo(slo),
    )
    for part in (traffic, slo, obj):
        part.done()
    return svc


def _parse_slo(obj: _Obj) -> SloSpec:
    """Limits given directly, or a named preset of :mod:`npucenter.workload.slo` (e.g. MLPerf)."""
    preset_name = obj.get_opt_str("preset")
    if preset_name is None:
        return SloSpec(
            ttft_s=obj.get_float("ttft_s"),
            tpot_s=obj.get_float("tpot_s"),
            attainment_fraction=obj.get_float("attainment_fraction", 0.9),
        )
    preset = slo_from_spec(preset_name)
    return SloSpec(
        ttft_s=obj.get_float("ttft_s", preset.ttft_s),
        tpot_s=obj.get_float("tpot_s", preset.tpot_s),
        attainment_fraction=obj.get_float("attainment_fraction", 0.9),
        source=preset.source,
    )


def _parse_device(data: Any) -> DeviceOption:
    obj = _Obj(data, "devices[]")
    obj.path = f"devices[{obj.data.get('device', '?')}]"
    dev = DeviceOption(
        device_id=obj.get_str("device"),
        server_cost_usd_per_hour=obj.get_float("server_cost_usd_per_hour"),
        cost_source=obj.get_str("cost_source", ""),
        cards_per_server=obj.get_opt_int("cards_per_server"),
        server_overhead_w=obj.get_float("server_overhead_w", 0.0),
        idle_power_fraction=obj.get_opt_float("idle_power_fraction"),
        min_servers=obj.get_int("owned_servers", 0),
        max_servers=obj.get_int("max_servers", 1000),
        overrides=obj.get_numbers("overrides"),
        override_source=obj.get_str("override_source", ""),
    )
    obj.done()
    return dev


def _parse_job(data: Any) -> GpuJobDemand:
    obj = _Obj(data, "gpu_jobs[]")
    job = GpuJobDemand(
        name=obj.get_str("name"),
        gpu_hours_per_day=obj.get_float("gpu_hours_per_day"),
        device_ids=obj.get_strs("devices"),
        max_utilisation_fraction=obj.get_float("max_utilisation_fraction", 1.0),
    )
    obj.done()
    return job


def _parse_disagg(data: Any) -> DisaggregationSpec:
    obj = _Obj(data, "disaggregation[]")
    dis = DisaggregationSpec(
        prefill_device_id=obj.get_str("prefill"),
        decode_device_id=obj.get_str("decode"),
        prefill_tp=obj.get_int("prefill_tp", 1),
        decode_tp=obj.get_int("decode_tp", 1),
        decode_per_prefill=obj.get_ints("decode_per_prefill", (1, 2, 4)),
        services=obj.get_strs("services"),
        kv_link_gbps=obj.get_float("kv_link_gbps", 50.0),
    )
    obj.done()
    return dis


def _parse_rule(obj: _Obj | None) -> RuleSpec:
    if obj is None:
        return RuleSpec()
    rule = RuleSpec(
        npu_share=obj.get_float("npu_share", 0.8),
        tolerance_fraction=obj.get_float("tolerance_fraction", 0.05),
    )
    obj.done()
    return rule


def _parse_verification(obj: _Obj | None) -> VerificationSpec:
    if obj is None:
        return VerificationSpec()
    ver = VerificationSpec(
        max_rounds=obj.get_int("max_rounds", 3),
        headroom_step_fraction=obj.get_float("headroom_step_fraction", 0.15),
        max_requests=obj.get_opt_int("max_requests"),
        routing=obj.get_str("routing", "least-outstanding-tokens"),
    )
    obj.done()
    return ver


def _positive(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise InvalidConfigError(name, value, "must be a positive number")


def _fraction(name: str, value: float, open_low: bool = False) -> None:
    low_ok = value > 0 if open_low else value >= 0
    if not (low_ok and value <= 1):
        reason = "must be a fraction in (0, 1]" if open_low else "must be a fraction in [0, 1]"
        raise InvalidConfigError(name, value, reason)


def _name(name: str, value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise InvalidConfigError(name, value, "must be a non-empty string")


def _unique(name: str, values: Sequence[str]) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise InvalidConfigError(name, value, "appears twice")
        seen.add(value)
