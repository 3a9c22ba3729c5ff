"""The reconciler writes what runs back to the store (SQLite, a fake executor): a replica no
node can take is ``pending`` with the reason and never billed, a failed start is ``failed``,
and the API's deployment and server views agree with the executor."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from factories import make_tenant
from npucenter.api import create_app
from npucenter.api.admission import run_admission
from npucenter.clock import FakeClock
from npucenter.engines import ReplicaSpec
from npucenter.errors import CapacityUnavailableError
from npucenter.executors import FakeExecutor
from npucenter.executors.base import RunningReplica
from npucenter.gateway import Gateway, StaticKeyResolver
from npucenter.gateway.reconciler import DeploymentReconciler, WantedReplica, wanted_replicas
from npucenter.settings import Settings


class NoNodeFor(FakeExecutor):
    """A fake cluster whose nodes have at most ``max_tp`` cards: bigger replicas never place."""

    def __init__(self, max_tp: int) -> None:
        super().__init__()
        self.max_tp = max_tp

    async def start(
        self, spec: ReplicaSpec, *, replica_id: str | None = None, wait_ready: bool = True
    ) -> RunningReplica:
        if spec.tp > self.max_tp:
            self.calls.append(("start", replica_id or "?"))
            raise CapacityUnavailableError(f"no Ray node has GPU:{spec.tp}")
        return await super().start(spec, replica_id=replica_id, wait_ready=wait_ready)


class Rig:
    def __init__(self, tmp_path: Path, executor: FakeExecutor) -> None:
        settings = Settings.from_env(
            {"NPUCENTER_ADMIN_KEY": "admin-0123456789abcdef"}, data_dir=tmp_path
        )
        self.clock = FakeClock(1_000_000.0)
        self.control: Any = create_app(settings, now_s=self.clock.now_s).state.control
        self.executor = executor
        self.gateway = Gateway(keys=StaticKeyResolver({}))
        self.reconciler = DeploymentReconciler(
            read=self.read, executor=executor, gateway=self.gateway, record=self.record
        )
        self.writes: list[dict[int, tuple[str, str | None]]] = []
        with self.control.tx() as repo:
            repo.create_server("h100-0", "h100", 4)
            make_tenant(repo, "acme", device_type="h100", nominal_cards=4)

    def read(self) -> list[WantedReplica]:
        with self.control.tx() as repo:
            return wanted_replicas(repo, device_names={"nvidia_h100_sxm": "h100"})

    def record(self, states: dict[int, tuple[str, str | None]]) -> None:
        self.writes.append(dict(states))
        with self.control.tx() as repo:
            repo.record_run_states(states)

    def deploy(self, name: str, replicas: int, tp: int) -> int:
        with self.control.tx() as repo:
            dep = repo.create_deployment(
                repo.get_tenant("acme"), name=name, model="llama-3.1-8b", device_type="h100",
                tp=tp, precision="fp8", replicas=replicas,
            )  # fmt: skip
            dep_id = int(dep.id)
        run_admission(self.control)
        return dep_id

    def tick(self) -> Any:
        return asyncio.run(self.reconciler.reconcile())

    def replicas(self, dep_id: int) -> list[Any]:
        with self.control.tx() as repo:
            return [
                (r.state, r.run_state, r.run_reason)
                for r in repo.replicas_of(repo.get_deployment(dep_id))
            ]

    def billed_s(self) -> float:
        with self.control.tx() as repo:
            repo.checkpoint_usage()
        with self.control.tx() as repo:
            return sum(u.device_seconds for u in repo.list_usage(kind="replica"))


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path, NoNodeFor(max_tp=1))


def test_a_replica_no_node_can_take_is_pending_with_the_reason_and_unbilled(rig: Rig) -> None:
    small = rig.deploy("small", 1, tp=1)
    big = rig.deploy("big", 1, tp=2)  # placed on two store cards; no node has 2 GPUs
    report = rig.tick()
    assert report.started == ["h100-0-r0"] and report.failed == ["h100-0-r1"]
    assert rig.replicas(small) == [("placed", "running", None)]
    ((state, run_state, reason),) = rig.replicas(big)
    assert (state, run_state) == ("placed", "pending") and reason.startswith(
        "no Ray node has GPU:2"
    )
    rig.clock.advance(600.0)
    assert rig.billed_s() == pytest.approx(600.0)  # the running one's card only
    # what the API shows agrees with what runs
    from npucenter.api.views import deployment_view, server_out

    with rig.control.tx() as repo:
        shown = deployment_view(repo, big)
        server = server_out(repo, repo.get_server("h100-0"))
    assert (shown.num_placed_replicas, shown.num_running_replicas) == (1, 0)
    assert shown.replica_states[0].run_reason == reason
    assert server.num_idle_held_cards == 2
    # nothing changed: nothing written again
    writes = len(rig.writes)
    rig.tick()
    assert len(rig.writes) == writes


def test_a_failed_start_is_failed_then_running_once_it_starts(tmp_path: Path) -> None:
    rig = Rig(tmp_path, FakeExecutor())
    rig.executor.fail_starts = 1
    dep = rig.deploy("chat", 1, tp=1)
    rig.tick()
    ((state, run_state, reason),) = rig.replicas(dep)
    assert (state, run_state) == ("placed", "failed") and "failed to start" in reason
    rig.clock.advance(100.0)
    rig.tick()  # the first retry comes at once
    assert rig.replicas(dep) == [("placed", "running", None)]
    rig.clock.advance(50.0)
    assert rig.billed_s() == pytest.approx(50.0)  # from when it ran


def test_a_center_that_stops_leaves_its_replicas_pending_and_unbilled(tmp_path: Path) -> None:
    rig = Rig(tmp_path, FakeExecutor())
    dep = rig.deploy("chat", 1, tp=1)
    rig.tick()
    rig.clock.advance(100.0)
    asyncio.run(rig.reconciler.shutdown())
    ((state, run_state, reason),) = rig.replicas(dep)
    assert (state, run_state) == ("placed", "pending") and "center stopped" in reason
    rig.clock.advance(1000.0)  # the center is down: nothing runs, nothing billed
    assert rig.billed_s() == pytest.approx(100.0)
    rig.tick()  # the next leader's first tick
    assert rig.replicas(dep) == [("placed", "running", None)]
