"""FakeExecutor behaviour, the executor registry, and the Ray placement it would request."""

from __future__ import annotations

import sys
from dataclasses import replace

import pytest

from npucenter.engines import ReplicaSpec
from npucenter.errors import NotFoundError, NotSupportedError, UpstreamError
from npucenter.executors import (
    EXECUTORS,
    Executor,
    FakeExecutor,
    RayExecutor,
    ReplicaState,
    accelerator_resources,
    ray_actor_options,
)
from npucenter.executors.ray import RAY_INSTALL_HINT


def _spec(**kw: object) -> ReplicaSpec:
    base: dict[str, object] = {"engine": "virtual", "model": "llama-3.1-8b", "device": "rngd"}
    base.update(kw)
    return ReplicaSpec(**base)  # type: ignore[arg-type]


def test_every_registered_executor_satisfies_the_protocol() -> None:
    assert set(EXECUTORS.names()) >= {"local", "fake", "ray"}
    for name, cls in EXECUTORS.items():
        instance = cls() if name != "ray" else cls(address=None)
        assert isinstance(instance, Executor)


async def test_fake_executor_lifecycle() -> None:
    ex = FakeExecutor()
    a = await ex.start(_spec())
    b = await ex.start(_spec(), replica_id="b")
    assert a.state is ReplicaState.READY and a.launch.port != b.launch.port
    assert a.openai_base_url.endswith("/v1")
    assert await ex.check("b")
    ex.fail("b")
    assert not await ex.check("b")
    restarted = await ex.restart("b")
    assert restarted.restarts == 1 and await ex.check("b")
    await ex.stop(a.replica_id)
    assert [r.replica_id for r in ex.replicas()] == ["b"]
    await ex.shutdown()
    assert ex.replicas() == []
    assert ex.calls[0] == ("start", a.replica_id)
    assert ("restart", "b") in ex.calls


async def test_fake_executor_failures() -> None:
    ex = FakeExecutor()
    ex.fail_starts = 1
    with pytest.raises(UpstreamError):
        await ex.start(_spec())
    assert (await ex.start(_spec())).state is ReplicaState.READY
    with pytest.raises(NotFoundError):
        await ex.stop("missing")


@pytest.mark.parametrize(
    ("device", "tp", "expected"),
    [
        ("rngd", 2, {"resources": {"FURIOSA": 2.0}, "accelerator_type": "FURIOSA_RNGD"}),
        ("furiosa_rngd", 8, {"resources": {"FURIOSA": 8.0}, "accelerator_type": "FURIOSA_RNGD"}),
        ("rebellions_atom", 4, {"resources": {"RBLN": 4.0}}),
        ("nvidia_h100_sxm", 4, {"num_gpus": 4.0, "accelerator_type": "H100"}),
        ("nvidia_h200_sxm", 1, {"num_gpus": 1.0, "accelerator_type": "H200"}),
    ],
)
def test_accelerator_resources(device: str, tp: int, expected: dict[str, object]) -> None:
    assert accelerator_resources(_spec(device=device, tp=tp)) == expected


def test_a_device_outside_the_catalog_gets_no_guessed_resources() -> None:
    with pytest.raises(NotFoundError):  # was launched as a GPU because of its spelling
        accelerator_resources(_spec(device="some-gpu"))


def test_ray_actor_options_carry_env_name_and_the_specs_cpu_and_memory() -> None:
    env = (("HF_HOME", "/data/hf"), ("FURIOSA_DEVICES", "npu:7"))  # Ray sets the cards, not us
    spec = _spec(engine="furiosa-llm", tp=2, env=env)
    options = ray_actor_options(spec, "svc-1")
    assert options["name"] == "npucenter-replica-svc-1" and options["namespace"] == "npucenter"
    assert options["resources"] == {"FURIOSA": 2.0} and options["lifetime"] == "detached"
    assert options["runtime_env"] == {"env_vars": {"HF_HOME": "/data/hf"}}
    assert options["num_cpus"] == 0.0 and "memory" not in options  # the cards bound it
    sized = ray_actor_options(replace(spec, num_cpus=4.0, memory_gb=32.0), "svc-2")
    assert sized["num_cpus"] == 4.0 and sized["memory"] == 32 * 1024**3


async def test_ray_missing_raises_not_supported_with_pip_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    with pytest.raises(NotSupportedError) as info:
        await RayExecutor().start(_spec())
    assert info.value.feature == "ray executor"
    assert RAY_INSTALL_HINT in info.value.hint


def test_a_deployments_cpu_and_memory_come_from_its_fleet_entry_to_the_ray_actor() -> None:
    from npucenter.engines import engine_choice
    from npucenter.gateway.reconciler import WantedReplica

    wanted = WantedReplica(
        replica_id="h100-0-r0",
        deployment_id=1,
        deployment="chat",
        tenant="acme",
        model="llama-3.1-8b",
        device="h100",
        precision="fp8",
        tp=2,
        server="h100-0",
        card_indices=(0, 1),
        engine=engine_choice({"name": "virtual", "num_cpus": 6, "memory_gb": 48}),
    )
    options = ray_actor_options(wanted.spec(), wanted.replica_id)
    assert options["num_cpus"] == 6.0 and options["memory"] == 48 * 1024**3
    assert options["num_gpus"] == 2.0 and options["accelerator_type"] == "H100"
    bare = replace(wanted, engine=engine_choice("virtual"))
    assert ray_actor_options(bare.spec(), "x")["num_cpus"] == 0.0
