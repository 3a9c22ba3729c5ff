"""The fleet file's ``jobs:``: fine-tune, preprocessing and benchmark jobs over time.

Pure parsing into :class:`JobSpec`; errors name the offending key. The twin admits them over time
(:mod:`npucenter.sim.jobs`); the live center's jobs come through the API instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from npucenter.errors import InvalidConfigError
from npucenter.fleet.devices import fallback_devices_from
from npucenter.policy.admission import PriorityClass, WorkloadKind

__all__ = ["JobSpec", "jobs_from_list"]

_JOB_KEYS = {
    "name",
    "kind",
    "tenant",
    "device",
    "cards",
    "tp",
    "priority",
    "arrival_s",
    "duration_s",
    "fallback_devices",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class JobSpec:
    """A job of the fleet file: ``num_cards`` cards of ``device`` for ``duration_s``."""

    name: str
    tenant: str
    device: str
    duration_s: float
    arrival_s: float = 0.0
    num_cards: int = 1
    tp: int = 1  # cards per tensor-parallel group (divides num_cards)
    kind: WorkloadKind = WorkloadKind.FINETUNE
    priority_class: PriorityClass | None = None  # None: the tenant's class
    fallback_devices: tuple[str, ...] = ()  # tried in order after ``device`` (fungible job)

    def __post_init__(self) -> None:
        if not math.isfinite(self.arrival_s) or self.arrival_s < 0:
            raise InvalidConfigError("jobs.arrival_s", self.arrival_s, "must be finite and >= 0")
        if not (math.isfinite(self.duration_s) and self.duration_s > 0):
            raise InvalidConfigError("jobs.duration_s", self.duration_s, "must be finite and > 0")
        if self.num_cards < 1 or self.tp < 1 or self.num_cards % self.tp:
            raise InvalidConfigError(
                "jobs.cards", self.num_cards, f"must be >= 1 and a multiple of tp={self.tp}"
            )
        if self.kind is WorkloadKind.REPLICA:
            raise InvalidConfigError("jobs.kind", self.kind.value, "replicas are services")


def jobs_from_list(entries: Sequence[Mapping[str, Any]]) -> tuple[JobSpec, ...]:
    """Parse the fleet file's ``jobs:`` list; errors name the offending key.

    Example::

        jobs:
          - {name: lora-1, tenant: kaist, device: h100, cards: 4, arrival_s: 60, duration_s: 1800}
          - {name: eval, tenant: kaist, device: rngd, fallback_devices: [h100], duration_s: 600}
    """
    out: list[JobSpec] = []
    for k, entry in enumerate(entries):
        unknown = set(entry) - _JOB_KEYS
        if unknown:
            raise InvalidConfigError(
                f"jobs[{k}]", sorted(unknown), f"unknown keys; known: {sorted(_JOB_KEYS)}"
            )
        try:
            kind = WorkloadKind(str(entry.get("kind", "finetune")))
        except ValueError:
            raise InvalidConfigError(
                f"jobs[{k}].kind", entry.get("kind"), "use finetune, preprocess or benchmark"
            ) from None
        priority = entry.get("priority")
        out.append(
            JobSpec(
                name=str(entry.get("name", f"job-{k}")),
                tenant=str(entry["tenant"]),
                device=str(entry["device"]),
                duration_s=float(entry["duration_s"]),
                arrival_s=float(entry.get("arrival_s", 0.0)),
                num_cards=int(entry.get("cards", 1)),
                tp=int(entry.get("tp", 1)),
                kind=kind,
                priority_class=PriorityClass.parse(priority) if priority is not None else None,
                fallback_devices=fallback_devices_from(
                    str(entry["device"]),
                    entry.get("fallback_devices"),
                    field="jobs.fallback_devices",
                    owner=f"job {str(entry.get('name', f'job-{k}'))!r}",
                ),
            )
        )
    names = [j.name for j in out]
    if len(set(names)) != len(names):
        raise InvalidConfigError("jobs.name", names, "each job needs its own name")
    return tuple(out)
