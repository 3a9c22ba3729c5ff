"""A fungible deployment's replica is served by the engine of the device family it lands on."""

from __future__ import annotations

import pytest

from npucenter.catalog import default_catalog
from npucenter.engines import EngineChoice, device_family, engine_for_device
from npucenter.errors import NotFoundError, NotSupportedError

FAMILY_ENGINE = {"rngd": "furiosa-llm", "rbln": "vllm-rbln", "gpu": "vllm", "cpu": "vllm"}


@pytest.mark.parametrize("named", ["vllm", "furiosa-llm", "vllm-rbln"])
def test_every_catalog_device_gets_its_familys_engine_with_the_same_options(named: str) -> None:
    choice = EngineChoice(name=named, model_path="m", max_model_len=2048, args=("--x",))
    for dev in default_catalog().devices:
        family = device_family(dev.device_id)
        got = engine_for_device(choice, dev.device_id)
        assert got.name == FAMILY_ENGINE[family], dev.device_id
        assert (got.model_path, got.max_model_len, got.args) == ("m", 2048, ("--x",))
        if got.name == named:
            assert got is choice  # an engine that runs there is kept as it is


def test_the_virtual_and_external_engines_serve_any_device() -> None:
    virtual = EngineChoice()
    external = EngineChoice(name="external", base_url="http://10.0.0.7:8000")
    for device in ("rngd", "atom", "h100"):
        assert engine_for_device(virtual, device) is virtual
        assert engine_for_device(external, device) is external


def test_lora_on_a_family_whose_engine_serves_no_adapters_is_refused() -> None:
    choice = EngineChoice(name="vllm", enable_lora=True)
    assert engine_for_device(choice, "h100") is choice
    with pytest.raises(NotSupportedError):
        engine_for_device(choice, "rngd")


def test_a_device_outside_the_catalog_is_not_found() -> None:
    with pytest.raises(NotFoundError):
        engine_for_device(EngineChoice(name="vllm"), "no-such-card")
