"""Real engines at the process boundary: vLLM's CPU build, external servers, engine choices.

What each launch would run (argv, environment, readiness, timeout) without starting anything;
the vLLM CPU command is the one the real-engine tier starts (tests/e2e/test_real_engine.py).
"""

from __future__ import annotations

import pytest

from npucenter.engines import (
    ENGINES,
    EngineChoice,
    ReplicaSpec,
    default_engine_for_device,
    device_family,
    engine_choice,
    launch_spec,
)
from npucenter.engines.options import LORA_ENGINES
from npucenter.errors import InvalidConfigError, NotSupportedError, UnknownPluginError


def _flag(argv: tuple[str, ...], name: str) -> str:
    return argv[argv.index(name) + 1]


def _cpu_spec(**kw: object) -> ReplicaSpec:
    base: dict[str, object] = {
        "engine": "vllm",
        "model": "tiny-llama",
        "device": "cpu",
        "model_path": "/data/models/tiny-llama",
        "max_model_len": 1024,
        "precision": "bf16",
        "executable": "/venv/bin/python",
    }
    return ReplicaSpec(**{**base, **kw})  # type: ignore[arg-type]


def test_vllm_cpu_build_runs_the_module_entry_point_offline() -> None:
    ls = launch_spec(_cpu_spec(), port=8123)
    assert ls.argv[:4] == (
        "/venv/bin/python",
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
    )
    assert _flag(ls.argv, "--model") == "/data/models/tiny-llama"
    assert _flag(ls.argv, "--served-model-name") == "tiny-llama"
    assert _flag(ls.argv, "--max-model-len") == "1024"
    assert _flag(ls.argv, "--dtype") == "bfloat16"
    assert "--tensor-parallel-size" not in ls.argv and "--gpu-memory-utilization" not in ls.argv
    env = ls.env_dict()
    assert env["HF_HUB_OFFLINE"] == "1" and env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert "CUDA_VISIBLE_DEVICES" not in env
    assert ls.health_path == "/health" and ls.resources == ()
    assert ls.ready_timeout_s == ENGINES.get("vllm").cpu_ready_timeout_s  # type: ignore[attr-defined]


def test_vllm_cpu_build_keeps_given_env_and_timeout_and_refuses_fp8() -> None:
    spec = _cpu_spec(env=(("VLLM_CPU_KVCACHE_SPACE", "2"),), ready_timeout_s=42.0)
    ls = launch_spec(spec, port=1)
    assert [v for k, v in ls.env if k == "VLLM_CPU_KVCACHE_SPACE"] == ["2"]
    assert ls.ready_timeout_s == 42.0
    with pytest.raises(NotSupportedError):
        launch_spec(_cpu_spec(precision="fp8"), port=1)


def test_vllm_gpu_build_is_unchanged_by_the_cpu_path() -> None:
    ls = launch_spec(ReplicaSpec(engine="vllm", model="m", device="h100", tp=2), port=1)
    assert ls.argv[:3] == ("vllm", "serve", "m") and _flag(ls.argv, "--tensor-parallel-size") == "2"
    assert ls.env_dict() == {"CUDA_VISIBLE_DEVICES": "0,1"}


@pytest.mark.parametrize("device", ["cpu", "host-cpu", "CPU"])
def test_the_host_cpu_is_its_own_family_served_by_vllm(device: str) -> None:
    assert device_family(device) == "cpu"
    assert default_engine_for_device(device) == "vllm"
    with pytest.raises(NotSupportedError):  # furiosa-llm runs on RNGD only
        launch_spec(ReplicaSpec(engine="furiosa-llm", model="m", device=device), port=1)


def test_an_external_engine_is_never_launched() -> None:
    with pytest.raises(NotSupportedError):
        launch_spec(ReplicaSpec(engine="external", model="m", device="h100"), port=1)


def test_engine_choice_from_a_name_or_a_mapping() -> None:
    assert engine_choice(None) == EngineChoice()
    assert engine_choice("VLLM").name == "vllm"
    assert engine_choice("furiosa").name == "furiosa-llm"  # aliases resolve
    choice = engine_choice(
        {
            "name": "vllm",
            "model_path": "tiny-llama",
            "max_model_len": "1024",
            "kv_cache_space_gb": 2,
            "args": ["--enforce-eager"],
            "env": {"OMP_NUM_THREADS": 2},
            "enable_lora": True,
            "max_lora_rank": 8,
        }
    )
    assert choice.max_model_len == 1024 and choice.is_real and not choice.is_external
    assert choice.launch_args() == ("--enable-lora", "--max-lora-rank", "8", "--enforce-eager")
    assert dict(choice.launch_env()) == {
        "VLLM_CPU_KVCACHE_SPACE": "2",
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
        "OMP_NUM_THREADS": "2",
    }


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("tgi", UnknownPluginError),
        ({"model_path": "x"}, InvalidConfigError),  # no name
        ({"name": "vllm", "gpu": 1}, InvalidConfigError),  # unknown key
        ({"name": "vllm", "max_model_len": "long"}, InvalidConfigError),
        ({"name": "vllm", "args": "--x"}, InvalidConfigError),  # a string, not a list
        ({"name": "external"}, InvalidConfigError),  # no base_url
        ({"name": "external", "base_url": "ftp://x"}, InvalidConfigError),
        ({"name": "vllm", "base_url": "http://x"}, InvalidConfigError),  # only external has one
        ({"name": "furiosa-llm", "enable_lora": True}, NotSupportedError),
        (3, InvalidConfigError),
    ],
)
def test_bad_engine_choices_name_what_is_wrong(value: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        engine_choice(value)


def test_an_external_choice_names_its_key_variable_never_the_key() -> None:
    choice = engine_choice(
        {"name": "external", "base_url": "http://10.0.0.7:8000", "api_key_env": "TEAM_KEY"}
    )
    assert choice.is_external and choice.api_key_env == "TEAM_KEY"
    assert "api_key" not in {f for f in choice.__dataclass_fields__ if f != "api_key_env"}


def test_lora_capability_table_names_only_registered_engines() -> None:
    assert set(LORA_ENGINES) <= set(ENGINES.names())
    assert "vllm" in LORA_ENGINES
