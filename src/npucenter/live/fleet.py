"""The fleet in the live center: registered in the store at start, its deployments served.

:func:`register_fleet` puts the fleet file's servers, tenants, quotas and services in the store
(idempotently: a second start adds nothing, and nothing an operator changed is undone);
:func:`serve_fleet` starts the gateway and runs the deployment reconciler
(:mod:`npucenter.gateway.reconciler`): every admitted replica of every deployment runs as an
engine (virtual, local processes by default), served under its model id and its deployment's
name, restarted when it dies, stopped when scaled down, deleted or preempted, and at shutdown.
The fleet model itself is the core's (:mod:`npucenter.fleet`); this module is its one live edge.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from npucenter.api.admission import admit_after_change
from npucenter.errors import InvalidConfigError, NotFoundError, NpuCenterError
from npucenter.fleet import Fleet
from npucenter.gateway.app import Gateway
from npucenter.live.gateway import OPERATOR_TENANT

__all__ = [
    "FleetRegistration",
    "deployment_options",
    "device_names",
    "register_fleet",
    "serve_fleet",
]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class FleetRegistration:
    """What :func:`register_fleet` added to the store (names); empty on a second start."""

    servers: list[str] = field(default_factory=list)
    deployments: list[str] = field(default_factory=list)
    tenants: list[str] = field(default_factory=list)  # the file's tenants, created
    quotas: list[str] = field(default_factory=list)  # "<tenant>/<device>" set from ``tenants:``
    placed: list[str] = field(default_factory=list)  # replicas put on their fleet-file cards
    skipped: list[str] = field(default_factory=list)  # services that cannot run (with why)


def register_fleet(control: Any, fleet: Fleet) -> FleetRegistration:
    """Put the fleet file's servers and services in the store, idempotently.

    Servers ``<device>-<n>`` are created when missing (an existing one is left as it is, and
    nothing an operator added is ever removed). The ``tenants:`` block's tenants are created
    (kind ``company``) with their quotas on each device type where the store has none for them.
    Each ``services`` entry becomes a deployment of its ``tenant`` (the ``operator`` when none,
    priority ``production``) named ``<service>-<device>`` (created when missing, else left
    alone); an owner with no quota on a service's device type gets one covering its services
    there. Per-server replicas are placed on the cards the fleet file gives them when
    those are free, so admission accounts for them like any other; then an admission cycle
    places the rest. A service that cannot run (e.g. a device without a sourced figure) is
    logged and skipped; the center still starts.
    """
    from npucenter.store.repository import canonical_device, check_runs_on

    out = FleetRegistration()
    with control.admission_lock, control.tx() as repo:
        try:
            operator = repo.get_tenant(OPERATOR_TENANT)
        except NotFoundError:
            operator = repo.create_tenant(OPERATOR_TENANT, "company")
        servers = {s.name: s for s in repo.list_servers()}
        for group in fleet.servers:
            for name in group.server_names():
                have = servers.get(name)
                if have is None:
                    servers[name] = repo.create_server(
                        name, group.device, group.cards_per_server, {"fleet": fleet.name}
                    )
                    out.servers.append(name)
                elif (
                    have.device_type != canonical_device(group.device)
                    or len(have.cards) != group.cards_per_server
                ):
                    log.warning(
                        "server %s is in the store as %d %s cards, the fleet file says %d %s;"
                        " left as it is",
                        name, len(have.cards), have.device_type,
                        group.cards_per_server, group.device,
                    )  # fmt: skip
        owners = _register_tenants(repo, fleet, operator, out)
        mine = {
            (t.name, d.name): d
            for t in owners.values()
            for d in repo.list_deployments(tenant_id=t.id)
        }
        runnable = []
        for service in fleet.services:
            name = service.deployment_name
            try:
                device = canonical_device(service.device_id)
                # precision None: the device's default (the perf model resolves it)
                model, precision = check_runs_on(
                    service.model_id, device, cast(str, service.precision), service.tp
                )
                fallbacks = _check_fallbacks(service, model, precision)
            except NpuCenterError as exc:
                log.error("fleet service %s is not deployed: %s", name, exc)
                out.skipped.append(f"{name}: {exc}")
                continue
            runnable.append((service, device, model, precision, fallbacks))
        for owner in owners.values():
            own = [r for r in runnable if (r[0].tenant or OPERATOR_TENANT) == owner.name]
            _ensure_covering_quota(repo, owner, fleet, own)
        for service, device, model, precision, fallbacks in runnable:
            name = service.deployment_name
            owner = owners[service.tenant or OPERATOR_TENANT]
            dep = mine.get((owner.name, name))
            accepts = [device, *fallbacks]
            if dep is None:
                dep = repo.create_deployment(
                    owner,
                    name=name,
                    model=model,
                    device_type=device,
                    tp=service.tp,
                    precision=precision,
                    replicas=fleet.num_replicas(service),
                    priority_class=None if service.tenant else "production",
                    engine=service.engine,  # shown by the API; the file's entry is what runs
                    engine_options=_thawed(dict(service.engine_options)),
                    fallback_device_types=fallbacks,  # each replica: the first with room
                )
                out.deployments.append(name)
            elif (dep.model, dep.accepted_device_types(), dep.tp) != (model, accepts, service.tp):
                log.warning(
                    "deployment %s of %s runs %s on %d %s cards, the fleet file says %s on %d %s;"
                    " left as it is",
                    name, owner.name, dep.model, dep.tp, "/".join(dep.accepted_device_types()),
                    model, service.tp, "/".join(accepts),
                )  # fmt: skip
                continue
            out.placed += _place_as_in_the_file(repo, dep, fleet, name, servers)
    if out.servers or out.deployments or out.tenants or out.quotas:
        log.info(
            "fleet %s registered: servers %s, tenants %s, quotas %s, deployments %s",
            fleet.name, out.servers or "-", out.tenants or "-", out.quotas or "-",
            out.deployments or "-",
        )  # fmt: skip
    admit_after_change(control)
    return out


def _register_tenants(
    repo: Any, fleet: Fleet, operator: Any, out: FleetRegistration
) -> dict[str, Any]:
    """Create the fleet file's tenants (kind ``company``) and give each the ``tenants:`` quota on
    every device type where it has none in the store (an operator's later change is kept).

    Returns name -> tenant for the operator and every tenant the file names.
    """
    from npucenter.store.repository import canonical_device

    owners: dict[str, Any] = {OPERATOR_TENANT: operator}
    names = [q.tenant for q in fleet.tenants] + [s.tenant for s in fleet.services if s.tenant]
    for name in dict.fromkeys(names):
        if name in owners:
            continue
        try:
            owners[name] = repo.get_tenant(name)
        except NotFoundError:
            owners[name] = repo.create_tenant(name, "company")
            out.tenants.append(name)
    for quota in fleet.tenants:
        tenant = owners[quota.tenant]
        have = {q.device_type for q in repo.list_quotas(tenant_id=tenant.id)}
        for device, cards in quota.nominal_cards.items():
            try:
                device_id = canonical_device(device)
            except NpuCenterError as exc:
                log.error("fleet quota of %s on %s is not set: %s", quota.tenant, device, exc)
                continue
            if device_id in have:
                continue
            repo.set_quota(
                tenant,
                device_id,
                nominal_cards=cards,
                borrowing_limit_cards=quota.borrowing_limit_cards.get(device),
                lending_limit_cards=quota.lending_limit_cards.get(device),
                cohort=quota.cohort,
                priority_class=quota.priority_class.name.lower().replace("_", "-"),
                tokens_per_s=quota.tokens_per_s,
            )
            have.add(device_id)
            out.quotas.append(f"{quota.tenant}/{device_id}")
    return owners


def _check_fallbacks(service: Any, model: str, precision: str) -> list[str]:
    """A fungible service's fallback device types (catalog ids), each checked as the API checks
    a deployment's list: the model runs there at the first type's TP and precision, and an
    engine of the type's family serves it with the entry's options."""
    from npucenter.engines import engine_choice, engine_for_device
    from npucenter.store.repository import canonical_device, check_runs_on

    fallbacks = [canonical_device(d) for d in service.fallback_device_ids]
    if not fallbacks:
        return []
    first = canonical_device(service.device_id)
    if len({first, *fallbacks}) != len(fallbacks) + 1:  # two server groups of one catalog device
        raise InvalidConfigError(
            "services.fallback_devices",
            list(service.fallback_device_ids),
            f"{service.deployment_name}: names one device type twice ({first}, {fallbacks})",
        )
    choice = engine_choice({"name": service.engine, **dict(service.engine_options)})
    for device in fallbacks:
        check_runs_on(model, device, precision, service.tp)
    for device in (first, *fallbacks):
        engine_for_device(choice, device)
    return fallbacks


def _ensure_covering_quota(repo: Any, owner: Any, fleet: Fleet, runnable: list[Any]) -> None:
    """Give a tenant a quota for its fleet services on each device type it has none for (a
    fungible service's: each type it lists, so its replicas may land on any with room)."""
    need: dict[str, int] = {}
    for service, device, _model, _precision, fallbacks in runnable:
        for accepted in (device, *fallbacks):
            need[accepted] = need.get(accepted, 0) + service.tp * fleet.num_replicas(service)
    rows = repo.list_quotas(tenant_id=owner.id)
    have = {q.device_type for q in rows}
    first = rows[0] if rows else None
    for device, cards in need.items():
        if device in have:
            continue
        repo.set_quota(
            owner,
            device,
            nominal_cards=cards,
            cohort=first.cohort if first else None,
            priority_class=first.priority_class if first else "production",
            tokens_per_s=first.tokens_per_s if first else None,
        )
        rows = repo.list_quotas(tenant_id=owner.id)
        first = rows[0]


def _place_as_in_the_file(
    repo: Any, dep: Any, fleet: Fleet, name: str, servers: dict[str, Any]
) -> list[str]:
    """Place the deployment's pending replicas on the cards the fleet file gives them, if free."""
    placed = [p for p in fleet.replicas() if p.deployment == name]
    taken = {a.card_id for a in repo.allocations()}
    out = []
    for rep, where in zip(repo.replicas_of(dep), placed, strict=False):
        server = servers.get(where.server_id)
        if rep.state != "pending" or server is None or server.health == "down":
            continue
        by_index = {c.index: c for c in server.cards}
        cards = [by_index.get(i) for i in where.card_ids]
        if any(c is None or c.id in taken or c.health == "down" for c in cards):
            continue  # admission places it elsewhere
        repo.place_replica(rep, dep, [c.id for c in cards if c is not None])
        taken.update(c.id for c in cards if c is not None)
        out.append(where.replica_id)
    return out


def _thawed(value: Any) -> Any:
    """The fleet parser's frozen engine options as JSON values (pairs back into mappings)."""
    if isinstance(value, dict):
        return {k: _thawed(v) for k, v in value.items()}
    if isinstance(value, tuple):
        if value and all(
            isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str) for v in value
        ):
            return {k: _thawed(v) for k, v in value}
        return [_thawed(v) for v in value]
    return value


def deployment_options(fleet: Fleet) -> Any:
    """``options(tenant, deployment)`` for the reconciler: the fleet file's entries' aliases,
    sequence limits and engines for the fleet's deployments (by owner); None (the defaults:
    the virtual engine) for the others.

    Raises InvalidConfigError/UnknownPluginError for an engine entry that is not valid.
    """
    from npucenter.engines import engine_choice
    from npucenter.gateway.reconciler import DeploymentOptions

    by_name = {
        (s.tenant or OPERATOR_TENANT, s.deployment_name): DeploymentOptions(
            alias=s.alias,
            max_num_seqs=s.max_num_seqs,
            engine=engine_choice({"name": s.engine, **dict(s.engine_options)}),
            drain_s=s.autoscale.drain_s if s.autoscale is not None else None,
        )
        for s in fleet.services
    }

    def options(tenant: str, deployment: str) -> DeploymentOptions | None:
        return by_name.get((tenant, deployment))

    return options


def device_names(fleet: Fleet) -> dict[str, str]:
    """Catalog id -> the fleet file's name for it (what the tariff and the dashboard use)."""
    out = {}
    for group in fleet.servers:
        try:
            from npucenter.store.repository import canonical_device

            out[canonical_device(group.device)] = group.device
        except NpuCenterError:
            continue
    return out


@contextlib.asynccontextmanager
async def serve_fleet(
    gateway: Gateway,
    fleet: Fleet,
    *,
    launch: bool,
    control: Any = None,
    executor: Any = None,
    interval_s: float = 2.0,
    data_dir: Path | None = None,
    leadership: Any = None,
) -> AsyncIterator[None]:
    """Start the gateway and (``launch``) serve the store's deployments; stop both at exit.

    With ``launch`` (and ``control``), the fleet is registered in the store
    (:func:`register_fleet`) and a :class:`~npucenter.gateway.reconciler.DeploymentReconciler`
    runs engines (virtual, local processes unless ``executor`` is given) for every admitted
    replica, woken by every change the API commits. Without it the gateway serves nothing of its
    own (an external executor's business) and the store is left alone. With ``data_dir``, real
    engines load local models from ``<data_dir>/models`` (the tiny test model is built there on
    first use) and engines' logs go to ``<data_dir>/logs/engines``. With a shared ``leadership``
    (:class:`npucenter.live.leader.Leadership`, PostgreSQL), only while this process leads.
    """
    from npucenter.gateway.reconciler import (
        DEFAULT_DRAIN_S,
        DeploymentReconciler,
        wanted_replicas,
    )

    await gateway.start()
    if executor is None and launch and control is not None:
        from npucenter.executors.local import LocalProcessExecutor

        log_dir = data_dir / "logs" / "engines" if data_dir is not None else None
        executor = LocalProcessExecutor(log_dir=log_dir)

    async def lead() -> tuple[DeploymentReconciler, asyncio.Task[None]]:
        await asyncio.to_thread(register_fleet, control, fleet)
        options, names = deployment_options(fleet), device_names(fleet)

        def read() -> list[Any]:
            with control.tx() as repo:
                return wanted_replicas(repo, options=options, device_names=names)

        def record(states: dict[int, tuple[str, str | None]]) -> None:
            with control.tx() as repo:  # what runs, for `deploy list` and the bill
                repo.record_run_states(states)

        def release(still_held: set[int]) -> None:
            with control.tx() as repo:  # drained replicas' cards: billed up to now, then free
                released = repo.release_drained_replicas(still_held)
            if released:
                admit_after_change(control)  # what waits for those cards is placed now

        from npucenter.settings import secret_from_env

        reconciler = DeploymentReconciler(
            read=read,
            record=record,
            release=release,
            executor=executor,
            gateway=gateway,
            interval_s=interval_s,
            models_dir=data_dir / "models" if data_dir is not None else None,
            secret=secret_from_env,
            drain_s=getattr(getattr(control, "settings", None), "drain_s", DEFAULT_DRAIN_S),
        )
        gateway.reconciler = reconciler  # type: ignore[attr-defined]
        control.replica_inflight = reconciler.inflight_by_row  # `deploy scale` drains the idlest
        leading.append(reconciler)
        gateway.expected_models = set(fleet.models)
        control.on_change.append(reconciler.wake)
        # Replicas start in the background: the server answers at once (503 + Retry-After
        # for a model whose replicas are still starting).
        from npucenter.live.autoscaler import Autoscaler

        autoscaler = Autoscaler(control, gateway, fleet, interval_s=interval_s)
        reconciler.remote_inflight = lambda: autoscaler.remote_inflight  # other gateways'
        if leadership is not None and leadership.shared:  # their rows: 1 s, read every tick
            reconciler.drain_settle_s = interval_s + 2.0
        gateway.autoscaler = autoscaler  # type: ignore[attr-defined]

        async def loops() -> None:  # the reconciler and the autoscaler, cancelled together
            await asyncio.gather(reconciler.run_forever(), autoscaler.run_forever())

        return reconciler, asyncio.create_task(loops(), name="deployment-reconciler")

    async def lead_when_elected() -> None:  # several processes: only the leader runs engines
        assert leadership is not None
        while True:
            await leadership.until_leader()
            reconciler, ticking = await lead()
            try:
                await leadership.until_lost()
            finally:
                with contextlib.suppress(ValueError):
                    control.on_change.remove(reconciler.wake)
                ticking.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticking
            await reconciler.shutdown()  # lost: another process starts them now

    leading: list[DeploymentReconciler] = []  # this process's reconcilers (the last one runs)
    reconciler: DeploymentReconciler | None = None
    task: asyncio.Task[None] | None = None
    electing: asyncio.Task[None] | None = None
    try:
        if launch and control is not None:
            if leadership is None or not leadership.shared:
                reconciler, task = await lead()
            else:
                gateway.expected_models = set(fleet.models)  # until the leader's pool is read
                electing = asyncio.create_task(lead_when_elected(), name="leader-election")
        yield
    finally:
        if electing is not None:
            electing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await electing
        if reconciler is not None:
            with contextlib.suppress(ValueError):
                control.on_change.remove(reconciler.wake)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await gateway.aclose()
        if executor is not None:
            await executor.shutdown()
        if leading and (leadership is None or leadership.is_leader):
            await leading[-1].record_stopped()  # nothing runs now: not billed meanwhile
        if leadership is not None:
            leadership.release()
