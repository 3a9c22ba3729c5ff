"""The real engines' launch commands: flags, environment and health checks they produce."""

from __future__ import annotations

import sys

import pytest

from npucenter.engines import (
    ENGINES,
    Engine,
    LaunchSpec,
    ReplicaSpec,
    default_engine_for_device,
    device_family,
    launch_spec,
)
from npucenter.errors import InvalidConfigError, NotSupportedError, UnknownPluginError


def _flag(argv: tuple[str, ...], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_every_registered_engine_satisfies_the_protocol() -> None:
    assert set(ENGINES.names()) >= {"vllm", "furiosa-llm", "vllm-rbln", "virtual"}
    for _name, engine in ENGINES.items():
        assert isinstance(engine, Engine)


def test_unknown_engine_lists_valid_names() -> None:
    with pytest.raises(UnknownPluginError) as info:
        ENGINES.get("tgi")
    assert "vllm" in info.value.valid


def test_vllm_serve_command_for_gpu() -> None:
    spec = ReplicaSpec(
        engine="vllm",
        model="llama-3.1-70b",
        model_path="meta-llama/Llama-3.1-70B-Instruct",
        device="nvidia_h100_sxm",
        tp=4,
        device_indices=(4, 5, 6, 7),
        max_num_seqs=128,
        gpu_memory_utilization_fraction=0.9,
        precision="fp8",
    )
    ls = launch_spec(spec, host="0.0.0.0", port=9100)
    assert ls.argv[:3] == ("vllm", "serve", "meta-llama/Llama-3.1-70B-Instruct")
    assert _flag(ls.argv, "--tensor-parallel-size") == "4"
    assert _flag(ls.argv, "--port") == "9100"
    assert _flag(ls.argv, "--host") == "0.0.0.0"
    assert _flag(ls.argv, "--max-num-seqs") == "128"
    assert _flag(ls.argv, "--gpu-memory-utilization") == "0.9"
    assert _flag(ls.argv, "--quantization") == "fp8"
    assert _flag(ls.argv, "--served-model-name") == "llama-3.1-70b"
    assert ls.env_dict()["CUDA_VISIBLE_DEVICES"] == "4,5,6,7"
    assert ls.health_url == "http://0.0.0.0:9100/health"
    assert dict(ls.resources) == {"GPU": 4.0}


def test_vllm_rejects_unmapped_precision_and_npu_devices() -> None:
    with pytest.raises(NotSupportedError):
        launch_spec(ReplicaSpec(engine="vllm", model="m", device="h100", precision="int4"), port=1)
    with pytest.raises(NotSupportedError) as info:
        launch_spec(ReplicaSpec(engine="vllm", model="m", device="rngd"), port=1)
    assert "furiosa-llm" in info.value.hint


def test_furiosa_llm_serve_selects_cards_with_devices() -> None:
    spec = ReplicaSpec(
        engine="furiosa-llm",
        model="llama-3.1-8b",
        model_path="/models/Llama-3.1-8B-Instruct-FP8",
        device="furiosa_rngd",
        tp=2,
        device_indices=(2, 3),
        extra_args=("--enable-auto-tool-choice",),
    )
    ls = launch_spec(spec, port=8100)
    assert ls.argv[:3] == ("furiosa-llm", "serve", "/models/Llama-3.1-8B-Instruct-FP8")
    assert _flag(ls.argv, "--devices") == "npu:2,npu:3"
    assert _flag(ls.argv, "--port") == "8100"
    assert ls.argv[-1] == "--enable-auto-tool-choice"
    assert ls.health_path == "/v1/models"
    assert dict(ls.resources) == {"FURIOSA": 2.0}  # Ray's own resource name


def test_vllm_rbln_uses_rbln_devices_and_tp_env() -> None:
    spec = ReplicaSpec(
        engine="vllm-rbln",
        model="llama-3.1-8b",
        device="rebellions_atom",
        tp=4,
        max_model_len=8192,
        max_num_seqs=4,
    )
    ls = launch_spec(spec, port=8200)
    env = ls.env_dict()
    assert env["RBLN_DEVICES"] == "0,1,2,3"
    assert env["VLLM_RBLN_TP_SIZE"] == "4"
    assert _flag(ls.argv, "--tensor-parallel-size") == "1"
    assert _flag(ls.argv, "--block-size") == "8192"
    assert _flag(ls.argv, "--max-model-len") == "8192"
    assert ls.argv[:2] == ("vllm", "serve")


def test_vllm_rbln_needs_max_model_len() -> None:
    with pytest.raises(InvalidConfigError) as info:
        launch_spec(ReplicaSpec(engine="vllm-rbln", model="m", device="atom"), port=1)
    assert info.value.field == "max_model_len"


def test_virtual_engine_runs_this_python() -> None:
    spec = ReplicaSpec(engine="virtual", model="llama-3.1-8b", device="rngd", time_scale=0.5)
    ls = launch_spec(spec, port=8300)
    assert ls.argv[:3] == (sys.executable, "-m", "npucenter.engines.virtual")
    assert _flag(ls.argv, "--time-scale") == "0.5"
    assert _flag(ls.argv, "--device") == "rngd"


@pytest.mark.parametrize(
    ("device", "family", "engine"),
    [
        ("rngd", "rngd", "furiosa-llm"),
        ("furiosa_rngd", "rngd", "furiosa-llm"),
        ("rebellions_atom", "rbln", "vllm-rbln"),
        ("REBEL-quad", "rbln", "vllm-rbln"),
        ("nvidia_h100_sxm", "gpu", "vllm"),
    ],
)
def test_default_engine_per_device(device: str, family: str, engine: str) -> None:
    assert device_family(device) == family
    assert default_engine_for_device(device) == engine


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tp": 0},
        {"tp": 2, "device_indices": (1,)},
        {"tp": 2, "device_indices": (1, 1)},
        {"max_num_seqs": 0},
        {"gpu_memory_utilization_fraction": 1.5},
        {"time_scale": -1.0},
    ],
)
def test_replica_spec_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidConfigError):
        ReplicaSpec(engine="vllm", model="m", device="h100", **kwargs)  # type: ignore[arg-type]


def test_launch_spec_shell_quotes() -> None:
    ls = LaunchSpec(engine="x", argv=("echo", "a b"), env=(("K", "v w"),), port=1)
    assert ls.shell() == "K='v w' echo 'a b'"
