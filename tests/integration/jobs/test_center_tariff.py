"""The center's tariff and modelled card power: settings, fleet file, rates."""

from __future__ import annotations

import pytest

from npucenter.api.app import center_rates
from npucenter.catalog import default_catalog
from npucenter.errors import InvalidConfigError, NotFoundError
from npucenter.settings import Settings, parse_tariff
from npucenter.store.rates import CardRates


def test_the_tariff_comes_from_the_environment(tmp_path):
    env = {"NPUCENTER_TARIFF": "rngd=1.5, h100=2,default=0.25", "NPUCENTER_JOB_RUNNER": "0"}
    settings = Settings.from_env(env, data_dir=tmp_path)
    assert settings.tariff_usd_per_device_hour == {"rngd": 1.5, "h100": 2.0, "default": 0.25}
    assert settings.run_jobs is False and settings.admission_interval_s == 2.0
    rates = center_rates(settings)
    assert rates.cost_usd("furiosa_rngd", 3600.0) == pytest.approx(1.5)
    assert rates.cost_usd(default_catalog().device("atom").device_id, 7200.0) == 0.5


@pytest.mark.parametrize("text", ["rngd", "rngd=cheap", "=1.0", "rngd=-1"])
def test_a_malformed_tariff_is_refused(text, tmp_path):
    with pytest.raises(InvalidConfigError) as info:
        Settings.from_env({"NPUCENTER_TARIFF": text}, data_dir=tmp_path)
    assert info.value.details["field"].startswith("NPUCENTER_TARIFF")


def test_the_fleet_files_tariff_is_used_when_none_is_set(tmp_path):
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        "servers:\n  - {device: h100, count: 1, cards_per_server: 8}\n"
        "tariff_usd_per_device_hour: {h100: 3.0}\n"
    )
    settings = Settings.from_env({"NPUCENTER_FLEET": str(fleet)}, data_dir=tmp_path)
    rates = center_rates(settings)
    h100 = default_catalog().device("h100").device_id
    assert rates.cost_usd(h100, 1800.0) == pytest.approx(1.5)
    assert rates.cost_usd("furiosa_rngd", 1800.0) is None  # not priced: no cost


def test_unpriced_by_default_and_unknown_devices_are_named():
    assert center_rates(Settings()).is_priced is False
    assert parse_tariff("") == {}
    with pytest.raises(NotFoundError):
        CardRates.from_tariff({"no-such-chip": 1.0})


def test_modelled_power_of_a_held_card_is_its_tdp_or_the_idle_share():
    h100 = default_catalog().device("h100")
    assert CardRates().power_w(h100.device_id) == pytest.approx(h100.tdp_w)
    idle_only = CardRates(busy_fraction=0.0).power_w(h100.device_id)
    assert 0 < idle_only < h100.tdp_w
    with pytest.raises(InvalidConfigError):
        CardRates(busy_fraction=1.5)
