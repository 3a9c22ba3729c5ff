"""/metrics label values are bounded: only models the pool serves; any other name is `other`."""

from __future__ import annotations

from factories import make_endpoint
from npucenter.clock import FakeClock
from npucenter.gateway.metrics import OTHER_MODEL, GatewayMetrics
from npucenter.gateway.pool import UpstreamPool


def test_client_chosen_model_names_never_become_series() -> None:
    pool = UpstreamPool(FakeClock(), [make_endpoint("r0", model_id="llama")])
    pool.set_aliases({"chat": "llama"})
    metrics = GatewayMetrics(pool, lambda: 0)
    for i in range(500):
        metrics.requests.labels(f"junk-{i}", "acme", "/v1/chat/completions", "error").inc()
    metrics.requests.labels("llama", "acme", "/v1/chat/completions", "ok").inc()
    metrics.requests.labels("chat", "acme", "/v1/chat/completions", "ok").inc()
    metrics.ttft.labels("junk").observe(0.1)
    text = metrics.render().decode()
    series = [
        line for line in text.splitlines() if line.startswith("npucenter_gateway_requests_total")
    ]
    assert len(series) == 3  # other, llama, chat
    assert "junk" not in text and f'model="{OTHER_MODEL}"' in text
    assert metrics.model_label(None) == "-"


def test_a_model_served_later_gets_its_own_series_despite_the_label_cache() -> None:
    pool = UpstreamPool(FakeClock(), [make_endpoint("r0", model_id="llama")])
    metrics = GatewayMetrics(pool, lambda: 0)
    metrics.requests.labels("qwen", "acme", "/v1/completions", "ok").inc()  # not served: other
    pool.add(make_endpoint("r1", model_id="qwen"))
    metrics.requests.labels("qwen", "acme", "/v1/completions", "ok").inc()
    pool.set_aliases({"chat": "qwen"})
    metrics.requests.labels("chat", "acme", "/v1/completions", "ok").inc()
    pool.remove("r1")
    metrics.requests.labels("qwen", "acme", "/v1/completions", "ok").inc()  # other again
    text = metrics.render().decode()
    counts = {
        line.split('model="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("npucenter_gateway_requests_total{")
    }
    assert counts == {OTHER_MODEL: 2.0, "qwen": 1.0, "chat": 1.0}
