"""``python -m npucenter.jobs.simulate --spec spec.json``: the digital twin as a job.

Builds the fleet of the spec (the shipped catalog), replays the first ``num_requests`` of its
trace under its routing policy, prints its progress (``simulated N/M requests``) and writes the
result: the summary `npucenter simulate --json` writes, plus the latency quantiles the report's
CDF charts are drawn from (:func:`npucenter.sim.report.report_charts`).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from npucenter.catalog import default_catalog
from npucenter.jobs._common import load_spec, say, write_result
from npucenter.jobs.twin import jsonable, sim_fleet, sim_trace
from npucenter.sim.center import build_center

__all__ = ["CDF_POINTS", "main", "quantiles"]

CDF_POINTS = 201  # quantiles kept per latency (the report's CDFs are drawn from 200)


def quantiles(values: Any, points: int = CDF_POINTS) -> list[float]:
    """``points`` evenly spaced quantiles of the finite values (none: an empty list)."""
    arr = np.asarray(values, dtype=float)
    arr = arr[np.isfinite(arr)]
    if not arr.size:
        return []
    return [float(v) for v in np.quantile(arr, np.linspace(0.0, 1.0, points))]


def main(argv: list[str] | None = None) -> int:
    spec = load_spec(argv)
    started = time.monotonic()
    fleet = sim_fleet(spec["fleet"])
    center = build_center(fleet, default_catalog(), policy=spec["policy"])
    trace = sim_trace(spec["trace"], num_requests=int(spec["num_requests"]), seed=spec["seed"])
    if spec["rate_scale"] != 1.0:
        trace = trace.scale_rate(float(spec["rate_scale"]))
    if len(fleet.services) > 1 and trace.service_names == ("default",):
        shares = {s.name: s.traffic_share for s in fleet.services}
        trace = trace.split(shares, np.random.default_rng(spec["seed"]))
    n = len(trace)
    say(
        f"simulate: fleet {spec['fleet_label']}, trace {trace.name}, {n} requests, {spec['policy']}"
    )

    said: set[int] = set()

    def progress(done: int, total: int) -> None:
        if done not in said:
            said.add(done)
            say(f"simulated {done}/{total} requests")

    result = center.run(trace, progress=progress, progress_every=max(1, n // 10))
    wall_s = time.monotonic() - started
    summary = dict(result.summary)
    summary["wall_s"] = wall_s
    say(
        f"done in {wall_s:.2f} s: {summary['completed']} completed, SLO met "
        f"{summary['slo_attainment']:.1%}, goodput {summary['goodput_rps']:.3f} req/s"
    )
    write_result(
        {
            "kind": "simulate",
            "fleet_label": spec["fleet_label"],
            "trace": trace.name,
            "trace_source": trace.source,
            "policy": spec["policy"],
            "num_requests": n,
            "rate_scale": spec["rate_scale"],
            "summary": jsonable(summary),
            "cdf": {
                "ttft_s": quantiles(result.ttft_s),
                "tpot_s": quantiles(result.tpot_s),
                "e2e_s": quantiles(result.e2e_s),
            },
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
