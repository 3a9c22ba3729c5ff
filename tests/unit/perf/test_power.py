"""Idle power: one rule, and every caller (perf model, twin, planner, ledger) follows it."""

from __future__ import annotations

from dataclasses import replace

import pytest

from npucenter.catalog import default_catalog
from npucenter.perf import IDLE_POWER_FRACTION, build_perf_model, card_power_w, idle_power_w
from npucenter.store.rates import CardRates

RNGD = default_catalog().device("rngd")
ATOM = default_catalog().device("rebellions_atom")


def test_a_sourced_idle_figure_wins_over_the_tdp_fraction() -> None:
    measured = replace(RNGD, idle_w=33.0)
    assert idle_power_w(measured) == 33.0
    assert idle_power_w(RNGD) == pytest.approx(IDLE_POWER_FRACTION * RNGD.tdp_w)


def test_a_device_without_power_figures_has_no_idle_power() -> None:
    assert ATOM.tdp_w is None and ATOM.idle_w is None
    assert idle_power_w(ATOM) is None and card_power_w(ATOM, 1.0) is None


def test_an_assumed_fraction_replaces_even_a_sourced_figure() -> None:
    measured = replace(RNGD, idle_w=33.0)
    assert idle_power_w(measured, assumed_fraction=0.5) == pytest.approx(0.5 * RNGD.tdp_w)


@pytest.mark.parametrize("busy", [0.0, 0.25, 1.0])
def test_card_power_rises_linearly_from_idle_to_tdp(busy: float) -> None:
    idle = idle_power_w(RNGD)
    assert idle is not None and RNGD.tdp_w is not None
    assert card_power_w(RNGD, busy) == pytest.approx(idle + (RNGD.tdp_w - idle) * busy)


def test_the_perf_model_and_the_ledger_use_the_same_idle_power() -> None:
    model = build_perf_model(model="llama-3.1-8b", device="rngd", tp=2)
    idle = idle_power_w(RNGD)
    assert idle is not None
    assert model.idle_power_w == pytest.approx(2 * idle)
    rates = CardRates.from_tariff({}, busy_fraction=0.0)
    assert rates.power_w(RNGD.device_id) == pytest.approx(idle)
    assert CardRates.from_tariff({}).power_w(ATOM.device_id) == 0.0
