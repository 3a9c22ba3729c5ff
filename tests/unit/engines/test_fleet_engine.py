"""A fleet file names each service's engine; the live center reads it, the simulator ignores it."""

from __future__ import annotations

import pytest

from npucenter.errors import InvalidConfigError, UnknownPluginError
from npucenter.fleet import fleet_from_dict, fleet_spec_from_mapping
from npucenter.live.fleet import deployment_options

FLEET = {
    "name": "real",
    "servers": [
        {"device": "cpu", "count": 1, "cards_per_server": 1},
        {"device": "h100", "count": 1, "cards_per_server": 2},
    ],
    "services": [
        {
            "model": "tiny-llama",
            "device": "cpu",
            "precision": "bf16",
            "replicas": 1,
            "engine": {"name": "vllm", "max_model_len": 1024, "env": {"A": "1"}, "args": ["-x"]},
        },
        {
            "model": "tiny-llama",
            "device": "h100",
            "service": "team",
            "precision": "bf16",
            "replicas": 1,
            "engine": {
                "name": "external",
                "base_url": "http://127.0.0.1:9000",
                "api_key_env": "TEAM_KEY",
            },
        },
        {"model": "llama-3.1-8b", "device": "h100", "precision": "fp8", "replicas": 1},
    ],
}


def test_each_service_gets_its_engine_and_the_deployment_options_carry_it() -> None:
    fleet = fleet_from_dict(FLEET)
    vllm, ext, virtual = fleet.services
    assert [s.engine for s in fleet.services] == ["vllm", "external", "virtual"]
    options = deployment_options(fleet)
    choice = options("operator", vllm.deployment_name).engine
    assert (choice.name, choice.max_model_len) == ("vllm", 1024)
    assert dict(choice.env) == {"A": "1"} and choice.args == ("-x",)
    ext_choice = options("operator", ext.deployment_name).engine
    assert ext_choice.is_external and ext_choice.api_key_env == "TEAM_KEY"
    assert ext_choice.base_url == "http://127.0.0.1:9000"
    assert options("operator", virtual.deployment_name).engine.name == "virtual"


def test_the_simulator_parses_the_same_file() -> None:
    spec = fleet_spec_from_mapping(FLEET)
    assert [d.engine for d in spec.deployments] == ["vllm", "external", "virtual"]
    hash(spec.deployments[0])  # frozen options stay hashable


@pytest.mark.parametrize(
    ("engine", "error"),
    [
        ("tgi", UnknownPluginError),
        ({"name": "external"}, InvalidConfigError),
        (7, InvalidConfigError),
    ],
)
def test_a_bad_engine_entry_is_refused_naming_it(engine: object, error: type[Exception]) -> None:
    data = {**FLEET, "services": [{**FLEET["services"][0], "engine": engine}]}  # type: ignore[dict-item]
    with pytest.raises(error):
        deployment_options(fleet_from_dict(data))
