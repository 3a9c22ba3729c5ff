"""FakeExecutor behaviour, the executor registry, and the Ray placement it would request."""

from __future__ import annotations

import sys

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
        ("rngd", 2, {"resources": {"RNGD": 2.0}}),
        ("furiosa_rngd", 8, {"resources": {"RNGD": 8.0}}),
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


def test_ray_actor_options_carry_env_and_name() -> None:
    spec = _spec(engine="furiosa-llm", tp=2, env=(("HF_HOME", "/data/hf"),))
    options = ray_actor_options(spec, "svc-1")
    assert options["name"] == "npucenter-replica-svc-1"
    assert options["resources"] == {"RNGD": 2.0}
    assert options["runtime_env"] == {"env_vars": {"HF_HOME": "/data/hf"}}
    assert options["num_cpus"] == 1.0


async def test_ray_missing_raises_not_supported_with_pip_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    with pytest.raises(NotSupportedError) as info:
        await RayExecutor().start(_spec())
    assert info.value.feature == "ray executor"
    assert RAY_INSTALL_HINT in info.value.hint
