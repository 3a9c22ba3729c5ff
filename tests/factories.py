"""Shared test builders: every argument defaulted, tiny sizes; pass only what the test is about.

``from factories import make_seq_request`` works from any test (``tests/`` is on ``sys.path``
through the root conftest). Builders return the package's own values (frozen dataclasses,
store rows); none of them talks to the network.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from npucenter.gateway.pool import ReplicaEndpoint
from npucenter.policy.admission import AdmissionSnapshot, Admitted, Server, Workload
from npucenter.policy.quota import PriorityClass, TenantQuota
from npucenter.sim.fakes import LinearStepCost
from npucenter.sim.replica import SeqRequest

__all__ = [
    "make_admitted",
    "make_database",
    "make_endpoint",
    "make_linear_step_cost",
    "make_quota",
    "make_seq_request",
    "make_server",
    "make_snapshot",
    "make_tenant",
    "make_workload",
]


def make_seq_request(
    request_id: str = "r",
    *,
    prompt_tokens: int = 16,
    max_output_tokens: int = 4,
    arrival_s: float = 0.0,
    **kw: Any,
) -> SeqRequest:
    """A request as a replica core sees it (16 prompt tokens, 4 out, arriving at 0)."""
    return SeqRequest(
        request_id=request_id,
        prompt_tokens=prompt_tokens,
        max_output_tokens=max_output_tokens,
        arrival_s=arrival_s,
        **kw,
    )


def make_endpoint(
    replica_id: str = "r0",
    *,
    base_url: str = "http://127.0.0.1:9000",
    model_id: str = "m",
    **kw: Any,
) -> ReplicaEndpoint:
    """A gateway replica endpoint (nothing listens at the default URL)."""
    return ReplicaEndpoint(replica_id=replica_id, base_url=base_url, model_id=model_id, **kw)


def make_server(
    server_id: str = "s1", *, num_cards: int = 8, device_type: str = "rngd", **kw: Any
) -> Server:
    """A server of the admission snapshot's fleet (8 rngd cards)."""
    return Server(server_id=server_id, device_type=device_type, num_cards=num_cards, **kw)


def make_quota(
    tenant: str = "acme",
    nominal_cards: int = 0,
    *,
    device_type: str = "rngd",
    cohort: str | None = "c",
    priority_class: PriorityClass = PriorityClass.PRODUCTION,
    **kw: Any,
) -> TenantQuota:
    """A tenant's quota: ``nominal_cards`` of one device type in cohort "c", production class."""
    return TenantQuota(
        tenant=tenant,
        cohort=cohort,
        nominal_cards={device_type: nominal_cards},
        priority_class=priority_class,
        **kw,
    )


def make_workload(
    workload_id: str = "w1",
    tenant: str = "acme",
    num_cards: int = 1,
    *,
    device_type: str = "rngd",
    **kw: Any,
) -> Workload:
    """A pending workload (a one-card rngd job unless told otherwise)."""
    return Workload(
        workload_id=workload_id, tenant=tenant, num_cards=num_cards, device_type=device_type, **kw
    )


def make_admitted(
    workload_id: str = "w1",
    tenant: str = "acme",
    *,
    server_id: str = "s1",
    card_indices: tuple[int, ...] = (0,),
    device_type: str = "rngd",
    **kw: Any,
) -> Admitted:
    """A running workload holding ``card_indices`` of ``server_id``."""
    return Admitted(
        workload_id=workload_id,
        tenant=tenant,
        device_type=device_type,
        server_id=server_id,
        card_indices=card_indices,
        **kw,
    )


def make_snapshot(
    fleet: Iterable[Server] | None = None,
    quotas: Iterable[TenantQuota] = (),
    running: Iterable[Admitted] = (),
    *,
    now_s: float = 0.0,
    **kw: Any,
) -> AdmissionSnapshot:
    """An admission snapshot (one 8-card server when no fleet is given, no quotas)."""
    servers = (make_server(),) if fleet is None else tuple(fleet)
    return AdmissionSnapshot(
        fleet=servers, quotas=tuple(quotas), running=tuple(running), now_s=now_s, **kw
    )


def make_database(directory: Path, name: str = "center.db") -> Any:
    """A migrated SQLite store in ``directory`` (a ``npucenter.store.Database``)."""
    from npucenter.store import Database, upgrade

    url = f"sqlite:///{directory / name}"
    upgrade(url)
    return Database(url)


def make_tenant(
    repo: Any,
    name: str = "acme",
    *,
    kind: str = "company",
    device_type: str | None = None,
    key: bool = False,
    **quota: Any,
) -> Any:
    """A stored tenant; with ``device_type`` also its quota (``quota`` fields, default 1 card).

    With ``key=True`` returns ``(tenant, secret)`` of a new tenant key instead of the tenant.
    """
    tenant = repo.create_tenant(name, kind)
    if device_type is not None:
        quota.setdefault("nominal_cards", 1)
        repo.set_quota(tenant, device_type, **quota)
    if key:
        _, secret = repo.create_key(tenant_id=tenant.id, scope="tenant", name=f"{name}-key")
        return tenant, secret
    return tenant


def make_linear_step_cost(**changes: Any) -> LinearStepCost:
    """The simulator's linear step cost with round numbers: step time = 10 ms + 0.1 ms per prefill token + 1 ms per decode sequence; 100 W busy."""
    base: dict[str, Any] = {
        "kv_capacity_tokens": 10_000,
        "idle_power_w": 10.0,
        "fixed_s": 0.010,
        "per_prefill_token_s": 0.0001,
        "per_decode_seq_s": 0.001,
        "busy_power_w": 100.0,
    }
    return LinearStepCost(**{**base, **changes})
