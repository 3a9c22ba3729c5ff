"""The simulator's summary contract (docs/simulator.md), shared by the center and CLI tests."""

from __future__ import annotations

from typing import Any

SUMMARY_KEYS = (
    "requests",
    "completed",
    "goodput_rps",
    "slo_attainment",
    "energy_j_per_output_token",
    "simulated_s",
    "wall_s",
)


def assert_summary_contract(summary: dict[str, Any]) -> None:
    """Every contract key is present and each latency block has p50/p90/p99."""
    missing = [key for key in SUMMARY_KEYS if key not in summary]
    assert not missing, f"summary lacks {missing}"
    for key in ("ttft_s", "tpot_s", "e2e_s"):
        assert set(summary[key]) >= {"p50", "p90", "p99"}
