"""The host CPU's perf-model efficiency is its profile measured on a machine, labelled so."""

from __future__ import annotations

from npucenter.catalog import default_catalog
from npucenter.perf import build_perf_model
from npucenter.perf.profiles import measured_efficiency, measured_profiles


def test_the_cpu_profile_is_measured_here_with_its_points_and_fit() -> None:
    profile = measured_profiles()["cpu"]
    assert profile["source"].startswith("measured on this machine")
    kinds = {p["kind"] for p in profile["points"]}
    assert kinds == {"prefill", "decode"} and all(p["step_s"] > 0 for p in profile["points"])
    eff = measured_efficiency("cpu")
    assert eff is not None and "measured on this machine" in eff.source
    assert 0 < eff.compute_fraction <= 1 and 0 < eff.memory_fraction <= 1


def test_the_cpu_perf_model_uses_it_and_published_devices_do_not() -> None:
    pm = build_perf_model(default_catalog(), model="tiny-llama", device="cpu", precision="bf16")
    assert pm.efficiency == measured_efficiency("cpu")
    assert any("measured on this machine" in a for a in pm.assumptions())
    h100 = build_perf_model(default_catalog(), model="llama-3.1-8b", device="h100")
    assert "measured on this machine" not in h100.efficiency.source
    assert measured_efficiency("nvidia_h100_sxm") is None


def test_the_fitted_profile_reproduces_its_own_step_times_roughly() -> None:
    # 3 parameters for 10 points measured on a shared machine: within a factor of 3 of each
    pm = build_perf_model(default_catalog(), model="tiny-llama", device="cpu", precision="bf16")
    for p in measured_profiles()["cpu"]["points"]:
        if p["kind"] == "prefill":
            n = float(p["input_tokens"])
            model = pm.step_time_s(n, pm.attn_pairs(n, 0.0), 0.0, 0.0)
        else:
            b = float(p["batch"])
            model = pm.step_time_s(0.0, 0.0, b, b * float(p["context_tokens"]))
        assert 1 / 3 < model / p["step_s"] < 3.0, p
