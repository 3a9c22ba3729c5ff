"""Deployments' SLO attainment over a recent window (live/attainment.py), on a fake clock."""

from __future__ import annotations

from typing import Any

import pytest

from npucenter.api.views import slo_attainment_text
from npucenter.fleet import fleet_from_dict
from npucenter.live.attainment import SloWindow, fleet_slos
from npucenter.workload.slo import Slo, slo_from_spec

EDGES = ("0.01", "0.05", "0.1", "0.25", "0.5", "1.0", "+Inf")
SLO = Slo(name="custom", ttft_s=0.3, tpot_s=0.05)


class _Hist:
    """Cumulative histograms of one model, as the gateway's registry gives them."""

    def __init__(self) -> None:
        self.ttft: list[float] = []
        self.tpot: list[float] = []

    def buckets(self, values: list[float]) -> list[list[Any]]:
        return [[e, float(sum(v <= float(e) for v in values))] for e in EDGES]

    def models(self) -> dict[str, Any]:
        return {"m": (self.buckets(self.ttft), self.buckets(self.tpot))}

    def read(self) -> dict[str, Any]:
        return {"": self.models()}  # this process's gateway only


def _window(h: _Hist, clock: list[float]) -> SloWindow:
    return SloWindow(h.read, window_s=300.0, step_s=10.0, now_s=lambda: clock[0], cache_s=0.0)


def test_the_histograms_are_read_once_per_cache_period_for_many_deployments() -> None:
    h, clock = _Hist(), [0.0]
    reads = []

    def read() -> dict[str, Any]:
        reads.append(clock[0])
        return h.read()

    w = SloWindow(read, now_s=lambda: clock[0], cache_s=1.0)
    for _ in range(50):  # a list of 50 deployments
        w.attainment("m", SLO)
    assert len(reads) == 1
    h.ttft.append(0.05)
    h.tpot.append(0.01)
    clock[0] = 1.0
    assert w.attainment("m", SLO)["num_requests"] == 1 and len(reads) == 2


def test_attainment_counts_the_window_and_moves_when_slow_requests_come() -> None:
    h, clock = _Hist(), [0.0]
    w = _window(h, clock)
    w.sample()
    assert w.attainment("m", SLO)["fraction"] is None  # no request yet
    h.ttft += [0.05] * 4
    h.tpot += [0.01] * 4
    clock[0] = 100.0
    w.sample()
    got = w.attainment("m", SLO)
    assert (got["fraction"], got["num_requests"], got["window_s"]) == (1.0, 4, 100.0)
    h.ttft += [0.4, 0.9]  # slow first tokens (over 0.3 s)
    h.tpot += [0.01, 0.01]
    clock[0] = 350.0
    got = w.attainment("m", SLO)
    assert got["num_requests"] == 6 and got["ttft_met_fraction"] == pytest.approx(4 / 6)
    assert got["tpot_met_fraction"] == 1.0 and got["fraction"] == pytest.approx(4 / 6)
    # the fast ones leave the window: the baseline is the snapshot taken after them
    clock[0] = 401.0
    w.sample()
    got = w.attainment("m", SLO)
    assert (got["num_requests"], got["fraction"], got["window_s"]) == (2, 0.0, 300.0)


def test_other_gateways_count_apart_and_one_that_leaves_takes_its_requests() -> None:
    own, other, clock = _Hist(), _Hist(), [0.0]
    sources = {"": own, "load/b-1": other}
    w = SloWindow(
        lambda: {k: h.models() for k, h in sources.items()},
        now_s=lambda: clock[0],
        cache_s=0.0,
    )
    own.ttft, own.tpot = [0.05] * 2, [0.01] * 2
    other.ttft, other.tpot = [0.9] * 2, [0.01] * 2  # slow there
    clock[0] = 301.0
    w.sample()  # the baseline: 2 + 2 requests
    own.ttft += [0.05] * 3
    own.tpot += [0.01] * 3
    other.ttft += [0.9]
    other.tpot += [0.01]
    clock[0] = 602.0
    got = w.attainment("m", SLO)
    assert (got["num_requests"], got["ttft_met_fraction"]) == (4, 0.75)
    del sources["load/b-1"]  # it stopped publishing: its counts go, no reset of ours
    got = w.attainment("m", SLO)
    assert (got["num_requests"], got["fraction"]) == (3, 1.0)


def test_a_limit_between_bucket_edges_never_counts_a_miss_as_met() -> None:
    h, clock = _Hist(), [0.0]
    w = _window(h, clock)
    h.ttft += [0.2, 0.28]  # 0.28 met 0.3, but the largest edge <= 0.3 is 0.25: counted missed
    h.tpot += [0.01, 0.01]
    assert w.attainment("m", SLO)["ttft_met_fraction"] == 0.5


def test_no_slo_or_no_limits_give_no_figure_and_a_reset_counts_from_zero() -> None:
    h, clock = _Hist(), [0.0]
    w = _window(h, clock)
    w.sample()
    assert w.attainment("m", None) is None
    assert w.attainment("m", slo_from_spec("none")) is None
    h.ttft += [0.05] * 3
    h.tpot += [0.01] * 3
    clock[0] = 400.0
    w.sample()
    h.ttft, h.tpot = [0.9], [0.01]  # the counts went down (a gateway restart): what there is now
    clock[0] = 800.0
    got = w.attainment("m", SLO)
    assert (got["num_requests"], got["fraction"]) == (1, 0.0)


def test_the_slo_is_the_fleet_files_for_the_deployment_else_for_its_model() -> None:
    fleet = fleet_from_dict(
        {
            "servers": [{"device": "h100", "count": 1, "cards_per_server": 8}],
            "services": [
                {"service": "chat", "model": "llama-3.1-8b", "device": "h100"},
                {"model": "qwen2.5-7b", "device": "h100"},
            ],
            "slos": {"chat": {"ttft_s": 0.5, "tpot_s": 0.05}},
        }
    )
    slo_of = fleet_slos(fleet, "operator")
    dep = next(s for s in fleet.services if s.service == "chat")
    assert slo_of("operator", dep.deployment_name, "llama-3.1-8b").ttft_s == 0.5
    assert slo_of("lab", "mine", "llama-3.1-8b").ttft_s == 0.5  # same model: its SLO
    assert slo_of("lab", "other", "qwen2.5-7b") is None  # the file gives it none


def test_the_text_the_cli_and_console_show() -> None:
    assert slo_attainment_text(None).startswith("—")
    doc = {"slo": "custom", "ttft_s": 0.3, "tpot_s": 0.05, "window_s": 300.0, "num_requests": 6,
           "ttft_met_fraction": 4 / 6, "tpot_met_fraction": 1.0, "fraction": 4 / 6}  # fmt: skip
    text = slo_attainment_text(doc)
    assert "66.7% of 6 requests" in text and "TTFT ≤ 300 ms" in text and "last 300 s" in text
    assert slo_attainment_text({**doc, "fraction": None, "num_requests": 0}).endswith("no request")
    from npucenter.cli.control import _slo_short  # `npucenter deploy list`'s column

    assert (_slo_short(doc), _slo_short(None)) == ("66.7% of 6", "-")
