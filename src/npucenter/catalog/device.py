"""Accelerator specifications. A figure that no source confirms is ``None``, never a guess."""

from __future__ import annotations

from dataclasses import dataclass, field

from npucenter.catalog.precision import Precision
from npucenter.errors import InvalidConfigError, MissingFigureError, NotSupportedError

__all__ = ["Device", "DeviceKind"]

DeviceKind = str  # "npu" | "gpu"

_NUMERIC_FIELDS = (
    "memory_gb",
    "memory_bandwidth_gbps",
    "bf16_tflops",
    "fp8_tflops",
    "int8_tops",
    "tdp_w",
    "idle_w",
    "interconnect_gbps",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Device:
    """One accelerator card type.

    Numeric fields are the sourced figures of devices.csv (``None`` when unsourced). ``assumed``
    names the fields a user catalog supplied; every output that uses them says so.
    """

    device_id: str
    vendor: str
    name: str
    kind: DeviceKind
    memory_gb: float | None = None
    memory_bandwidth_gbps: float | None = None  # peak GB/s
    bf16_tflops: float | None = None  # dense 16-bit matmul rate
    fp8_tflops: float | None = None
    int8_tops: float | None = None
    tdp_w: float | None = None
    idle_w: float | None = None  # measured idle power, if a source gives one
    interconnect: str = ""
    interconnect_gbps: float | None = None  # card-to-card, per direction
    cards_per_server: int | None = None
    precisions: tuple[Precision, ...] = ()
    aliases: tuple[str, ...] = ()
    source_url: str = ""
    notes: str = ""
    assumed: tuple[str, ...] = ()  # fields supplied by a user catalog, not a source
    assumption_sources: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.kind not in ("npu", "gpu"):
            raise InvalidConfigError(
                f"device {self.device_id}.kind", self.kind, "must be npu or gpu"
            )
        if not self.device_id or self.device_id != self.device_id.strip():
            raise InvalidConfigError("device_id", self.device_id, "must be a non-empty id")
        for name in _NUMERIC_FIELDS:
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise InvalidConfigError(f"device {self.device_id}.{name}", value, "must be > 0")
        if self.cards_per_server is not None and self.cards_per_server < 1:
            raise InvalidConfigError(
                f"device {self.device_id}.cards_per_server", self.cards_per_server, "must be >= 1"
            )

    def peak_tflops(self, precision: Precision) -> float:
        """Dense matmul rate at ``precision``; raises if unsupported or unsourced."""
        if precision not in self.precisions:
            supported = ", ".join(p.value for p in self.precisions) or "none sourced"
            raise NotSupportedError(
                f"{precision.value} on {self.device_id}",
                f"supported precisions: {supported}",
                hint="pick a supported --precision",
            )
        value = getattr(self, precision.compute_field)
        if value is None:
            raise MissingFigureError("device", self.device_id, [precision.compute_field])
        return float(value)

    def require(self, *fields: str) -> None:
        """Raise MissingFigureError naming every field of ``fields`` that has no figure."""
        missing = [f for f in fields if getattr(self, f) is None]
        if missing:
            raise MissingFigureError("device", self.device_id, missing)

    @property
    def numeric_fields(self) -> tuple[str, ...]:
        """Names of the numeric spec fields (for tables and overrides)."""
        return _NUMERIC_FIELDS
