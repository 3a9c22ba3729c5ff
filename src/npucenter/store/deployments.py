"""Deployments (inference services) and their replicas: create, scale, place and release.

A replica is ``pending`` until admission places it on cards; releasing it bills its cards.
A placed replica's ``run_state`` is what the reconciler saw of its engine (``starting``,
``running``, ``pending``: no node takes it, ``failed``); its cards are billed only while its
engine runs (or when no reconciler reports: the placement is all that is known).

A placed replica scaled down whose engine may still run is ``draining``: no longer one of the
deployment's replicas (not counted, not served new requests), but it keeps its cards, held
by its tenant and billed by its run state, until the reconciler reports its engine gone
(:meth:`DeploymentStore.release_drained_replicas`); scaled up again meanwhile, it is placed
again on the same cards.

A deployment deleted while some of its replicas' engines may run goes the same way: those
replicas drain, and the deployment row stays, hidden (:data:`DELETED`: not listed, not found,
never scaled), only to say whose they are until the last is released; its name is free at once
(the hidden row is renamed to one no caller can give, with a leading space). The row goes with
its last draining replica.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import select

from npucenter.errors import ConflictError, InvalidConfigError, NotFoundError
from npucenter.store.base import canonical_device, check_name, check_runs_on
from npucenter.store.fleet import FleetStore
from npucenter.store.ledger import LedgerStore
from npucenter.store.models import Allocation, Deployment, ReplicaRow, Tenant
from npucenter.store.quotas import QuotaStore

__all__ = ["DELETED", "REPLICA_STATES", "RUN_STATES", "UNBILLED_RUN_STATES", "DeploymentStore"]

#: pending (waits for admission), placed (on cards), draining (scaled down, still on its cards
#: until its engine has stopped; not one of the deployment's replicas)
REPLICA_STATES = ("pending", "placed", "draining")
#: what the reconciler reports of a placed replica's engine
RUN_STATES = ("starting", "running", "pending", "failed")
#: run states whose time is not billed: no engine serves on the cards (yet)
UNBILLED_RUN_STATES = frozenset({"starting", "pending", "failed"})
_REASON_LEN = 512
#: the desired replica count of a deployment deleted while replicas drain (never a valid count)
DELETED = -1


class DeploymentStore(QuotaStore, FleetStore, LedgerStore):
    """Deployments and replicas (quotas give the priority; held cards are billed)."""

    def create_deployment(
        self,
        tenant: Tenant,
        *,
        name: str,
        model: str,
        device_type: str,
        tp: int,
        precision: str,
        replicas: int,
        priority_class: str | None = None,
        engine: str = "virtual",
        engine_options: dict[str, Any] | None = None,
        min_replicas: int | None = None,
        max_replicas: int | None = None,
        idle_to_zero_s: float | None = None,
        fallback_device_types: Sequence[str] = (),
    ) -> Deployment:
        """Create a deployment after checking the model runs on the device (perf model).

        ``fallback_device_types`` makes its replicas fungible: admission places each on the
        first of ``device_type`` and the fallbacks, in order, with quota and room; the model
        must run on every one of them at this TP and precision. ``engine`` and
        ``engine_options`` are stored as given (the API checks them with
        ``npucenter.engines.engine_choice`` first).
        """
        check_name("deployment name", name)
        device_id = canonical_device(device_type)
        accepts = [device_id, *(canonical_device(d) for d in fallback_device_types)]
        if len(set(accepts)) != len(accepts):
            raise InvalidConfigError(
                "fallback_device_types", list(fallback_device_types), "names a device type twice"
            )
        model_id, precision_id = check_runs_on(model, device_id, precision, tp)
        for other in accepts[1:]:  # the same model, TP and precision must run on each
            check_runs_on(model, other, precision_id, tp)
        if not 0 <= replicas <= 256:
            raise InvalidConfigError("replicas", replicas, "must be between 0 and 256")
        if min_replicas is not None or max_replicas is not None:  # autoscaled: bounds checked
            from npucenter.policy.autoscaling import AutoscalePolicy

            bounds = {
                "min_replicas": min_replicas,
                "max_replicas": max_replicas,
                "idle_to_zero_s": idle_to_zero_s,
            }
            AutoscalePolicy(**{k: v for k, v in bounds.items() if v is not None})
        exists = self.session.scalar(
            select(Deployment).where(Deployment.tenant_id == tenant.id, Deployment.name == name)
        )
        if exists is not None:
            raise ConflictError(f"deployment {name!r} exists already", details={"name": name})
        now = self.now_s()
        dep = Deployment(
            tenant_id=tenant.id,
            name=name,
            model=model_id,
            device_type=device_id,
            tp=tp,
            precision=precision_id,
            replicas=replicas,
            priority_class=self.priority_for(tenant.id, device_id, priority_class),
            created_at_s=now,
            updated_at_s=now,
            engine=engine,
            engine_options=dict(engine_options or {}),
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            idle_to_zero_s=idle_to_zero_s,
            device_types=accepts if len(accepts) > 1 else [],
        )
        self.session.add(dep)
        self.session.flush()
        self.session.add_all(
            ReplicaRow(deployment_id=dep.id, index=i, created_at_s=now) for i in range(replicas)
        )
        self.session.flush()
        return dep

    def list_deployments(self, *, tenant_id: int | None = None) -> list[Deployment]:
        """Deployments, all or one tenant's (not those deleted whose replicas still drain)."""
        stmt = select(Deployment).where(Deployment.replicas != DELETED).order_by(Deployment.id)
        if tenant_id is not None:
            stmt = stmt.where(Deployment.tenant_id == tenant_id)
        return list(self.session.scalars(stmt))

    def get_deployment(
        self, dep_id: int, *, tenant_id: int | None = None, deleted: bool = False
    ) -> Deployment:
        """A deployment by id; outside the caller's scope, or deleted (its replicas still
        draining; ``deleted``: found), it is not found."""
        dep = self.row(Deployment, dep_id)
        if (
            dep is None
            or (tenant_id is not None and dep.tenant_id != tenant_id)
            or (dep.replicas == DELETED and not deleted)
        ):
            raise NotFoundError("deployment", str(dep_id))
        return dep

    def replicas_of(self, dep: Deployment, *, draining: bool = False) -> list[ReplicaRow]:
        """The deployment's replicas (pending and placed; ``draining``: those scaled down that
        still hold their cards too), by index."""
        stmt = (
            select(ReplicaRow).where(ReplicaRow.deployment_id == dep.id).order_by(ReplicaRow.index)
        )
        if not draining:
            stmt = stmt.where(ReplicaRow.state != "draining")
        return list(self.session.scalars(stmt))

    def scale_deployment(
        self, dep: Deployment, replicas: int, *, inflight: Mapping[int, int] | None = None
    ) -> Deployment:
        """Set the desired replica count: new replicas wait for admission, extra ones stop.

        The replicas removed are those with the fewest requests in flight (``inflight``: replica
        id -> count, from the gateway; one not given counts 0), the newest first among equals.
        One whose engine may run drains (:data:`REPLICA_STATES`); the others are released now.
        Replicas wanted again come first from those draining (they serve again on their cards).
        """
        if not 0 <= replicas <= 256:
            raise InvalidConfigError("replicas", replicas, "must be between 0 and 256")
        now = self.now_s()
        every = self.replicas_of(dep, draining=True)
        current = [r for r in every if r.state != "draining"]
        next_index = every[-1].index + 1 if every else 0
        if len(current) > replicas:
            counts = inflight or {}
            fewest = sorted(current, key=lambda r: (counts.get(r.id, 0), -r.index))
            gone = {r.id for r in fewest[: len(current) - replicas]}
            for rep in [r for r in current if r.id in gone]:
                self._remove_replica(rep, dep)
            current = [r for r in current if r.id not in gone]
        revived = [r for r in every if r.state == "draining"][: max(0, replicas - len(current))]
        for rep in revived:
            rep.state = "placed"  # its engine still runs (or is stopping: the reconciler sees)
        for i in range(replicas - len(current) - len(revived)):
            self.session.add(
                ReplicaRow(deployment_id=dep.id, index=next_index + i, created_at_s=now)
            )
        dep.replicas = replicas
        dep.updated_at_s = now
        self.session.flush()
        return dep

    def release_drained_replicas(self, still_held: Collection[int]) -> list[int]:
        """Release every draining replica whose engine is gone, billing it up to now.

        ``still_held``: the replica ids whose engine the reconciler still runs, drains, starts
        or stops (a new process holds none: what drained under the last one is released).
        Returns the ids released.
        """
        released = []
        for rep in self.replicas_in_state("draining"):
            if rep.id in still_held:
                continue
            dep = self.row(Deployment, rep.deployment_id)
            assert dep is not None  # a deployment's replicas go with it
            self.release_replica(rep, dep, reason="drained")
            released.append(rep.id)
        return released

    def _forget_if_deleted(self, dep: Deployment) -> None:
        """Remove a deleted deployment's hidden row once no replica of it is left."""
        if dep.replicas == DELETED and not self.replicas_of(dep, draining=True):
            self.session.delete(dep)
            self.session.flush()

    def _remove_replica(
        self, rep: ReplicaRow, dep: Deployment, *, reason: str = "scaled down"
    ) -> None:
        """A replica scaled down or deleted: drained if an engine may run on its cards (or it
        drains already), else released."""
        if rep.state == "draining" or (
            rep.state == "placed" and rep.run_state not in (None, "pending")
        ):
            rep.state = "draining"  # held and billed until the reconciler reports it stopped
            return
        self.release_replica(rep, dep, reason=reason)
        self.session.delete(rep)

    def delete_deployment(self, dep: Deployment) -> None:
        """Remove the deployment: its replicas stop, billing what they used.

        A replica whose engine may run drains, holding and billing its cards until the
        reconciler reports the engine gone (:meth:`release_drained_replicas`); the deployment
        is gone for its tenant at once (not listed, not found, its name free) and its hidden
        row goes with the last of them.
        """
        for rep in self.replicas_of(dep, draining=True):
            self._remove_replica(rep, dep, reason="deleted")
        dep.replicas = DELETED
        dep.min_replicas = dep.max_replicas = None  # never scaled again
        dep.name = f" deleted {dep.id} {dep.name}"[:128]  # its name is free at once
        dep.updated_at_s = self.now_s()
        self.session.flush()
        self._forget_if_deleted(dep)

    def place_replica(
        self,
        rep: ReplicaRow,
        dep: Deployment,
        card_ids: Sequence[int],
        *,
        num_borrowed: int = 0,
        device_type: str | None = None,
    ) -> None:
        """Record an admitted replica on its cards (of ``device_type``: one of the types the
        deployment accepts; None: its first)."""
        now = self.now_s()
        cards = self._cards(card_ids)
        chosen = device_type or dep.device_type
        if chosen not in dep.accepted_device_types():
            raise InvalidConfigError(
                "device_type",
                chosen,
                f"deployment {dep.name} accepts {dep.accepted_device_types()}",
            )
        rep.device_type = chosen
        rep.state = "placed"
        rep.server_id = cards[0].server_id
        rep.placed_at_s = now
        rep.run_state = rep.run_reason = rep.run_since_s = None  # until the reconciler reports
        for i, card in enumerate(cards):
            self.session.add(
                Allocation(
                    card_id=card.id,
                    tenant_id=dep.tenant_id,
                    replica_id=rep.id,
                    borrowed=i >= len(cards) - num_borrowed,
                    since_s=now,
                )
            )

    def release_replica(
        self, rep: ReplicaRow, dep: Deployment, *, reason: str, kind: str = "replica"
    ) -> float:
        """Free a replica's cards, bill them to the ledger and mark it pending (a draining one
        is removed: it was no longer wanted, and with the last of a deleted deployment's, that
        deployment's row); device-seconds."""
        allocs = self._replica_allocations(rep)
        if rep.run_state in UNBILLED_RUN_STATES:  # its engine never ran (since its last bill)
            for alloc in allocs:
                self.session.delete(alloc)
            used = 0.0
        else:
            used, _ = self._bill(
                allocs,
                dep.tenant_id,
                rep.device_type or dep.device_type,
                kind,
                f"deployment:{dep.id}/replica:{rep.index} {reason}",
            )
        if rep.state == "draining":
            self.session.delete(rep)
            self.session.flush()
            self._forget_if_deleted(dep)  # a deleted deployment's last one: its row goes too
            return used
        rep.state = "pending"
        rep.server_id = None
        rep.device_type = None  # admission chooses again
        rep.placed_at_s = None
        rep.run_state = rep.run_reason = rep.run_since_s = None
        self.session.flush()
        return used

    def record_run_states(self, states: Mapping[int, tuple[str, str | None]]) -> list[int]:
        """Record what the reconciler saw of placed replicas: replica id -> (state, reason).

        A replica going from billed (running, not reported) to unbilled (starting, pending,
        failed) is billed up to now; one coming back starts its billing cursor now, so the
        time no engine ran is never billed. Replicas no longer placed are left alone. Returns
        the ids whose state or reason changed.
        """
        for state, _reason in states.values():
            if state not in RUN_STATES:
                raise InvalidConfigError("run_state", state, f"must be one of {RUN_STATES}")
        now = self.now_s()
        changed = []
        for rep in self.replicas_by_id(states).values():
            state, reason = states[rep.id]
            reason = reason[:_REASON_LEN] if reason else None
            if rep.state != "placed" or (rep.run_state, rep.run_reason) == (state, reason):
                continue
            was_billed = rep.run_state not in UNBILLED_RUN_STATES
            billed = state not in UNBILLED_RUN_STATES
            allocs = self._replica_allocations(rep)
            if was_billed and not billed:
                dep = self.row(Deployment, rep.deployment_id)
                assert dep is not None
                self._bill(
                    allocs,
                    dep.tenant_id,
                    rep.device_type or dep.device_type,
                    "replica",
                    f"deployment:{dep.id}/replica:{rep.index} {state}: {reason or '-'}",
                    release=False,
                )
            elif billed and not was_billed:
                for alloc in allocs:
                    alloc.since_s = now  # billed from now: the time it did not run is not
            if rep.run_state != state:
                rep.run_since_s = now
            rep.run_state, rep.run_reason = state, reason
            changed.append(rep.id)
        self.session.flush()
        return changed

    def set_autoscale(
        self,
        dep: Deployment,
        *,
        min_replicas: int | None,
        max_replicas: int | None,
        idle_to_zero_s: float | None,
    ) -> Deployment:
        """Set a deployment's autoscaling bounds (all None: a fixed count again).

        Raises:
            InvalidConfigError: bounds the policy refuses (min > max, max < 1, idle < 0).
        """
        from npucenter.policy.autoscaling import AutoscalePolicy

        given = {
            "min_replicas": min_replicas,
            "max_replicas": max_replicas,
            "idle_to_zero_s": idle_to_zero_s,
        }
        AutoscalePolicy(**{k: v for k, v in given.items() if v is not None})  # checks them
        dep.min_replicas, dep.max_replicas = min_replicas, max_replicas
        dep.idle_to_zero_s = idle_to_zero_s
        dep.updated_at_s = self.now_s()
        self.session.flush()
        return dep

    def _replica_allocations(self, rep: ReplicaRow) -> list[Allocation]:
        return list(self.session.scalars(select(Allocation).where(Allocation.replica_id == rep.id)))

    def get_replica(self, replica_id: int) -> ReplicaRow:
        """A replica by id."""
        rep = self.row(ReplicaRow, replica_id)
        if rep is None:
            raise NotFoundError("replica", str(replica_id))
        return rep

    def replicas_in_state(self, state: str) -> list[ReplicaRow]:
        """Every replica in ``state`` (pending, placed or draining), by id."""
        stmt = select(ReplicaRow).where(ReplicaRow.state == state).order_by(ReplicaRow.id)
        return list(self.session.scalars(stmt))

    def replicas_by_id(self, replica_ids: Iterable[int]) -> dict[int, ReplicaRow]:
        """The replicas of ``replica_ids`` in one query (missing ids are left out)."""
        ids = list(replica_ids)
        if not ids:
            return {}
        return {
            r.id: r for r in self.session.scalars(select(ReplicaRow).where(ReplicaRow.id.in_(ids)))
        }

    def deployments_by_id(self, dep_ids: Iterable[int]) -> dict[int, Deployment]:
        """The deployments of ``dep_ids`` in one query (missing ids are left out)."""
        ids = list(dep_ids)
        if not ids:
            return {}
        stmt = select(Deployment).where(Deployment.id.in_(ids))
        return {d.id: d for d in self.session.scalars(stmt)}
