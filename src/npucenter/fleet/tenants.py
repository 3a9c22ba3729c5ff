"""Tenants of a simulated fleet: the ``tenants:`` block of a fleet file as admission quotas.

Pure parsing into :class:`npucenter.policy.quota.TenantQuota` (the live center's quota value);
errors name the offending key. See docs/simulator.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from npucenter.errors import InvalidConfigError
from npucenter.policy.quota import PriorityClass, StopPolicy, TenantQuota

__all__ = ["tenant_quotas_from_mapping"]

_TENANT_KEYS = {
    "cohort",
    "priority",
    "nominal_cards",
    "borrowing_limit_cards",
    "lending_limit_cards",
    "fair_share_weight",
    "stop_policy",
    "borrow_unnamed_device_types",
}


def tenant_quotas_from_mapping(data: Mapping[str, Any]) -> tuple[TenantQuota, ...]:
    """``{tenant: {cohort, priority, nominal_cards, borrowing_limit_cards, ...}}`` as quotas.

    Device types are lower-cased (as the simulator names its servers' device types).

    Example::

        tenants:
          acme: {priority: production, nominal_cards: {rngd: 16}}
          kaist: {priority: research, cohort: center, nominal_cards: {h100: 4}}
    """
    out: list[TenantQuota] = []
    for name in sorted(data):
        entry = data[name]
        if entry is None:
            entry = {}
        if not isinstance(entry, Mapping):
            raise InvalidConfigError(f"tenants.{name}", type(entry).__name__, "must be a mapping")
        unknown = set(entry) - _TENANT_KEYS
        if unknown:
            raise InvalidConfigError(
                f"tenants.{name}", sorted(unknown), f"unknown keys; known: {sorted(_TENANT_KEYS)}"
            )
        cohort = entry.get("cohort")
        out.append(
            TenantQuota(
                tenant=str(name),
                cohort=str(cohort) if cohort is not None else None,
                priority_class=PriorityClass.parse(entry.get("priority", "production")),
                nominal_cards=_cards(entry, "nominal_cards", name),
                borrowing_limit_cards=_cards(entry, "borrowing_limit_cards", name),
                lending_limit_cards=_cards(entry, "lending_limit_cards", name),
                fair_share_weight=float(entry.get("fair_share_weight", 1.0)),
                stop_policy=entry.get("stop_policy", StopPolicy.NONE),
                borrow_unnamed_device_types=bool(entry.get("borrow_unnamed_device_types", False)),
            )
        )
    return tuple(out)


def _cards(entry: Mapping[str, Any], key: str, tenant: str) -> dict[str, int]:
    value = entry.get(key) or {}
    if not isinstance(value, Mapping):
        raise InvalidConfigError(f"tenants.{tenant}.{key}", value, "must map device -> cards")
    out: dict[str, int] = {}
    for device, cards in value.items():
        if isinstance(cards, bool) or not isinstance(cards, int):
            raise InvalidConfigError(
                f"tenants.{tenant}.{key}.{device}", cards, "not a whole number"
            )
        out[str(device).lower()] = cards
    return out
