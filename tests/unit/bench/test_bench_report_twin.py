"""Report rendering, cost per million tokens, and the twin's saturation formula."""

from __future__ import annotations

import pytest

from npucenter.bench.metrics import summarize
from npucenter.bench.record import RequestRecord
from npucenter.bench.report import (
    build_report,
    cost_per_million_tokens,
    render_html,
    render_markdown,
)
from npucenter.bench.result import build_result, iter_runs
from npucenter.bench.twin import TwinTarget, compare_with_twin, predict_saturation
from npucenter.errors import InvalidConfigError


class LinearPerf:
    """A fake perf model: step = 10 ms + 1 ms per decode sequence + 0.01 ms per prefill token."""

    kv_capacity_tokens = 100_000

    @staticmethod
    def attn_pairs(chunk, prior):
        return chunk * prior + chunk * (chunk + 1) / 2

    def step_time_s(self, prefill, pairs, seqs, ctx):
        return 0.010 + 0.001 * seqs + 0.00001 * prefill

    def step_power_w(self, prefill, pairs, seqs, ctx):
        return 100.0

    def max_batch(self, ctx):
        return self.kv_capacity_tokens // ctx

    def predict(self, n_in, n_out, batch):
        class P:
            ttft_s = 0.02
            tpot_s = 0.011
            e2e_s = 0.02 + (n_out - 1) * 0.011

        return P()

    def assumptions(self):
        return ("fake",)


def test_saturation_formula_matches_continuous_batching():
    t = TwinTarget(device="d", model="m", max_num_seqs=8)
    p = predict_saturation(t, 100, 50, perf=LinearPerf())
    # step time is linear here, so E[T] is T at the means: j ~ Poisson(8/50) prefills of 100
    # tokens and 8 - j decoding sequences per iteration
    m = 8 / 50
    step = 0.010 + 0.001 * (8 - m) + 0.00001 * m * 100
    assert p["batch"] == 8 and p["batch_limit"] == "max_num_seqs"
    assert p["saturation_rps"] == pytest.approx(8 / (50 * step), rel=1e-6)
    assert p["tokens_per_j_at_saturation"] == pytest.approx(8 / (100 * step), rel=1e-6)


def test_time_scale_slows_the_prediction():
    fast = predict_saturation(TwinTarget(device="d", model="m"), 100, 50, perf=LinearPerf())
    slow = predict_saturation(
        TwinTarget(device="d", model="m", time_scale=4.0), 100, 50, perf=LinearPerf()
    )
    assert slow["saturation_rps"] == pytest.approx(fast["saturation_rps"] / 4)
    assert slow["low_load_tpot_s"] == pytest.approx(fast["low_load_tpot_s"] * 4)


def test_batch_limited_by_kv_and_token_budget():
    perf = LinearPerf()
    perf.kv_capacity_tokens = 450  # 3 sequences of 150 tokens
    p = predict_saturation(TwinTarget(device="d", model="m"), 100, 50, perf=perf)
    assert p["batch"] == 3 and p["batch_limit"] == "kv_capacity"
    budget = TwinTarget(device="d", model="m", max_num_batched_tokens=30)
    q = predict_saturation(budget, 100, 50, perf=LinearPerf())
    assert q["batch"] == 10 and q["batch_limit"] == "token_budget"


def test_twin_target_validation():
    with pytest.raises(InvalidConfigError):
        TwinTarget(device="d", model="m", time_scale=0)


def _records(n=20, e2e=1.0, ttft=0.1, out=20):
    return [
        RequestRecord(
            index=i,
            scheduled_s=i * 0.1,
            start_s=i * 0.1,
            lag_s=0.0,
            ttft_s=ttft,
            e2e_s=e2e,
            itl_s=(0.01,) * (out - 1),
            prompt_tokens=100,
            target_input_tokens=100,
            target_output_tokens=out,
            output_tokens=out,
            usage_reported=True,
            ok=True,
        )
        for i in range(n)
    ]


def _doc(label, device=None, e2e=1.0, energy=None):
    recs = _records(e2e=e2e)
    s = summarize(recs)
    if energy:
        s.update(energy_j=energy, output_tokens_per_j=s["total_output_tokens"] / energy)
    return build_result(
        kind="run",
        scenario={"name": "chat", "arrival": "poisson", "rate_rps": 10},
        endpoint={"model": "llama-3.1-8b", "base_url": "http://127.0.0.1:1"},
        summary=s,
        records=recs,
        device=device,
        label=label,
        extra={"target": {"device": device}},
    )


def test_cost_per_million_tokens():
    # 3600 USD/h at 1e6 tokens/h -> 3600 USD per million tokens
    assert cost_per_million_tokens(3600.0, 1e6 / 3600) == pytest.approx(3600.0)
    assert cost_per_million_tokens(None, 100.0) is None


def test_report_compares_runs_side_by_side_self_contained():
    a, b = _doc("chip-a", energy=100.0), _doc("chip-b", e2e=2.0)
    rep = build_report([a, b], names=["a.json", "b.json"], prices={"chip-a": 2.0, "*": 1.0})
    assert [r["label"] for r in rep["rows"]] == ["chip-a", "chip-b"]
    assert (
        rep["rows"][0]["price_usd_per_hour"] == 2.0 and rep["rows"][1]["price_usd_per_hour"] == 1.0
    )
    page = render_html(rep)
    assert page.count("<svg") >= 5 and "chip-a" in page and "chip-b" in page
    assert "<script" not in page and "src=" not in page and "href=" not in page
    md = render_markdown(rep)
    assert "| chip-a · chat |" in md and "| chip-b · chat |" in md
    cdf = rep["rows"][1]["cdf_e2e_s"]
    assert cdf[-1] == (2.0, 1.0)


def test_report_asks_the_twin_for_a_named_device():
    rep = build_report([_doc("rngd run", device="rngd")], names=["x.json"])
    tw = rep["rows"][0]["twin"]
    assert tw is not None and "prediction" in tw
    assert tw["prediction"]["saturation_rps"] > 0
    assert "ttft_s_at_load" in tw["error_fraction"]
    assert "Twin prediction" in render_markdown(rep)


def test_unknown_device_gives_an_error_row_not_a_crash():
    tw = compare_with_twin(_doc("x", device="no-such-chip"))
    assert tw is not None and "error" in tw


def test_suite_documents_expand_to_their_entries():
    suite = build_result(
        kind="suite",
        scenario={"suite": "proving-ground"},
        endpoint={"model": "m"},
        summary={},
        label="vendor",
        extra={
            "results": [
                {**_doc("v"), "suite_entry": "short-chat"},
                {**_doc("v"), "suite_entry": "x"},
            ]
        },
    )
    runs = list(iter_runs(suite))
    assert [r["suite_entry"] for r in runs] == ["short-chat", "x"]
    rep = build_report([suite], names=["s.json"])
    assert {r["scenario"] for r in rep["rows"]} == {"short-chat", "x"}
