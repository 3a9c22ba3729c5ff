"""The reconciler with real-engine choices: a slow start never holds up other deployments, a
failed start is visible with the engine's log tail and retried with a back-off, and an external
server (the bench stub) is reached, not started: health-checked, listed, published with its
upstream key (which nothing shows)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from factories import make_tenant
from npucenter.api import create_app
from npucenter.api.admission import run_admission
from npucenter.bench.stub import running_stub, stub_script
from npucenter.engines import ReplicaSpec, engine_choice
from npucenter.errors import UpstreamError
from npucenter.executors import FakeExecutor
from npucenter.executors.base import RunningReplica
from npucenter.gateway import Gateway, StaticKeyResolver
from npucenter.gateway.reconciler import (
    DeploymentOptions,
    DeploymentReconciler,
    WantedReplica,
    wanted_replicas,
)
from npucenter.settings import Settings

UPSTREAM_KEY = "sk-upstream-0123456789abcdef"


class SlowFake(FakeExecutor):
    """Starts of the replicas in ``delays`` take that long; ``broken`` ones fail with a log."""

    def __init__(self) -> None:
        super().__init__()
        self.delays: dict[str, float] = {}
        self.broken: set[str] = set()

    async def start(
        self, spec: ReplicaSpec, *, replica_id: str | None = None, wait_ready: bool = True
    ) -> RunningReplica:
        rid = replica_id or "x"
        await asyncio.sleep(self.delays.get(rid, 0.0))
        if rid in self.broken:
            self.calls.append(("start", rid))
            raise UpstreamError(
                f"replica {rid!r} exited with code 1 before it was ready",
                details={"exit_code": 1, "log_tail": "ValueError: head_dim 16 is not supported"},
            )
        return await super().start(spec, replica_id=replica_id, wait_ready=wait_ready)


class Rig:
    def __init__(self, tmp_path: Path, engines: dict[str, Any]) -> None:
        settings = Settings.from_env(
            {"NPUCENTER_ADMIN_KEY": "admin-0123456789abcdef"}, data_dir=tmp_path
        )
        self.control: Any = create_app(settings).state.control
        self.engines = engines  # deployment name -> EngineChoice
        self.executor = SlowFake()
        self.gateway = Gateway(keys=StaticKeyResolver({}))
        self.reconciler = DeploymentReconciler(
            read=self.read,
            executor=self.executor,
            gateway=self.gateway,
            start_wait_s=0.2,
            secret=lambda name: UPSTREAM_KEY if name == "TEAM_KEY" else None,
        )
        with self.control.tx() as repo:
            repo.create_server("h100-0", "h100", 4)
            make_tenant(repo, device_type="h100", nominal_cards=4)

    def read(self) -> list[WantedReplica]:
        def options(_tenant: str, name: str) -> DeploymentOptions:
            return DeploymentOptions(alias=None, engine=self.engines.get(name, engine_choice(None)))

        with self.control.tx() as repo:
            return wanted_replicas(repo, options=options, device_names={"nvidia_h100_sxm": "h100"})

    def deploy(self, name: str, model: str = "llama-3.1-8b", replicas: int = 1) -> None:
        with self.control.tx() as repo:
            repo.create_deployment(
                repo.get_tenant("acme"),
                name=name,
                model=model,
                device_type="h100",
                tp=1,
                precision="fp8",
                replicas=replicas,
            )
        run_admission(self.control)

    def pool(self) -> dict[str, str]:
        return {r.replica_id: r.endpoint.model_id for r in self.gateway.pool.replicas()}

    def states(self) -> dict[str, dict[str, Any]]:
        return {e["deployment"]: e for e in self.reconciler.engine_states()}


def test_a_slow_start_does_not_hold_up_another_deployment(tmp_path: Path) -> None:
    rig = Rig(tmp_path, {})
    rig.deploy("slow", model="llama-3.1-8b")
    rig.deploy("fast", model="qwen2.5-7b")
    slow_id = rig.read()[0].replica_id
    rig.executor.delays[slow_id] = 30.0

    async def run() -> None:
        report = await asyncio.wait_for(rig.reconciler.reconcile(), timeout=5)
        assert len(report.started) == 1 and slow_id not in report.started
        assert set(rig.pool().values()) == {"qwen2.5-7b"}  # served while the other starts
        assert rig.states()["slow"]["state"] == "starting"
        assert rig.states()["fast"]["state"] == "ready"
        # a tick while it still starts neither blocks nor starts it twice
        again = await asyncio.wait_for(rig.reconciler.reconcile(), timeout=5)
        assert not again.started and not again.failed
        assert [c for c in rig.executor.calls if c[0] == "start"] == [
            ("start", r) for r in report.started
        ]
        await rig.reconciler.shutdown()  # cancels the start in flight

    asyncio.run(run())
    assert rig.pool() == {}


def test_a_failed_start_is_visible_with_its_log_tail_and_backs_off(tmp_path: Path) -> None:
    rig = Rig(tmp_path, {})
    rig.deploy("broken")
    rid = rig.read()[0].replica_id
    rig.executor.broken.add(rid)

    async def run() -> None:
        report = await rig.reconciler.reconcile()
        assert report.failed == [rid]
        state = rig.states()["broken"]
        assert state["state"] == "failed" and "exited with code 1" in state["error"]
        assert "head_dim 16" in state["log_tail"] and state["num_failed_starts"] == 1
        await rig.reconciler.reconcile()  # the first retry is at once
        assert rig.states()["broken"]["num_failed_starts"] == 2
        await rig.reconciler.reconcile()  # then it waits (2 s, doubling to 60 s)
        assert rig.executor.calls.count(("start", rid)) == 2
        rig.executor.broken.clear()
        failure = rig.reconciler.failures[rid]
        rig.reconciler._failures[rid] = type(failure)(
            **{**{f: getattr(failure, f) for f in failure.__slots__}, "retry_at_s": 0.0}
        )
        report = await rig.reconciler.reconcile()
        assert report.started == [rid] and rig.states()["broken"]["state"] == "ready"
        assert rig.reconciler.failures == {}

    asyncio.run(run())


def test_an_external_server_is_reached_listed_and_published_with_its_key(tmp_path: Path) -> None:
    cfg = stub_script(models=("llama-3.1-8b",), api_key=UPSTREAM_KEY)
    with running_stub(cfg) as base_url:
        ext = engine_choice({"name": "external", "base_url": base_url, "api_key_env": "TEAM_KEY"})
        rig = Rig(tmp_path, {"team": ext})
        rig.deploy("team")

        async def run() -> None:
            report = await rig.reconciler.reconcile()
            assert len(report.started) == 1
            (replica,) = rig.gateway.pool.replicas()
            assert replica.endpoint.base_url == base_url
            assert replica.endpoint.api_key == UPSTREAM_KEY
            assert UPSTREAM_KEY not in repr(replica.endpoint)
            states = rig.reconciler.engine_states()
            assert states[0]["engine"] == "external" and states[0]["state"] == "ready"
            assert UPSTREAM_KEY not in json.dumps(states)
            assert rig.executor.calls == []  # nothing was started

        asyncio.run(run())
    # the server is gone: the next tick takes it off the pool, and shows it unreachable

    async def after() -> None:
        await rig.reconciler.reconcile()
        assert rig.pool() == {}
        assert rig.states()["team"]["state"] == "unreachable"

    asyncio.run(after())


def test_an_external_server_that_lists_another_model_is_a_visible_failure(tmp_path: Path) -> None:
    with running_stub(stub_script(models=("other-model",))) as base_url:
        ext = engine_choice({"name": "external", "base_url": base_url, "ready_timeout_s": 0.5})
        rig = Rig(tmp_path, {"team": ext})
        rig.reconciler.start_wait_s = 5.0
        rig.deploy("team")
        report = asyncio.run(rig.reconciler.reconcile())
        assert len(report.failed) == 1 and rig.pool() == {}
        assert "other-model" in rig.states()["team"]["error"]


def test_an_external_key_variable_that_is_unset_fails_clearly(tmp_path: Path) -> None:
    ext = engine_choice(
        {"name": "external", "base_url": "http://127.0.0.1:9", "api_key_env": "UNSET_KEY"}
    )
    rig = Rig(tmp_path, {"team": ext})
    rig.deploy("team")
    asyncio.run(rig.reconciler.reconcile())
    assert "UNSET_KEY" in rig.states()["team"]["error"]


@pytest.mark.parametrize("engine", ["vllm"])
def test_a_real_engines_spec_carries_the_deployments_engine_options(
    tmp_path: Path, engine: str
) -> None:
    choice = engine_choice(
        {"name": engine, "model_path": "/models/x", "max_model_len": 512, "ready_timeout_s": 9}
    )
    rig = Rig(tmp_path, {"real": choice})
    rig.deploy("real")
    (w,) = rig.read()
    spec = w.spec(models_dir=tmp_path)
    assert (spec.engine, spec.model_path, spec.max_model_len, spec.ready_timeout_s) == (
        engine,
        "/models/x",
        512,
        9.0,
    )
    assert w.spec("virtual").engine == engine  # the deployment's own engine wins
