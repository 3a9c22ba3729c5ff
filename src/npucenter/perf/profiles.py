"""Device profiles fitted from sweeps measured on a machine, not from published figures.

A profile is the :class:`~npucenter.perf.model.Efficiency` of one device fitted to step times
measured there (``benchmarks/bench_cpu_profile.py`` measures vLLM's CPU build serving the tiny
model and writes ``data/measured_profiles.json``); it stands in for the published-measurement
fit of a device that has none. Each profile keeps its measured points and says where and how
they were measured; its source is "measured on this machine", never a vendor's.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from typing import Any

from npucenter.perf.model import Efficiency

__all__ = ["measured_efficiency", "measured_profiles"]

_FILE = "data/measured_profiles.json"


@cache
def measured_profiles() -> dict[str, dict[str, Any]]:
    """Device id -> its measured profile (the shipped file; empty when there is none)."""
    resource = files("npucenter.perf").joinpath(_FILE)
    if not resource.is_file():
        return {}
    doc = json.loads(resource.read_text(encoding="utf-8"))
    return {str(p["device_id"]): dict(p) for p in doc.get("profiles", [])}


def measured_efficiency(device_id: str) -> Efficiency | None:
    """The fitted efficiency of ``device_id``'s measured profile, if it has one."""
    profile = measured_profiles().get(device_id)
    if profile is None:
        return None
    fit = profile["efficiency"]
    return Efficiency(
        compute_fraction=float(fit["compute_fraction"]),
        memory_fraction=float(fit["memory_fraction"]),
        step_overhead_s=float(fit["step_overhead_s"]),
        request_overhead_s=float(fit.get("request_overhead_s", 0.0)),
        source=f"fitted on {len(profile['points'])} step times measured on this machine "
        f"({profile['measured_with']})",
    )
