"""Request streams: trace readers, synthetic arrivals, transformations and SLOs.

Pure core: parsers take text; the only file access is the package's own Azure traces.
"""

from __future__ import annotations

from npucenter.workload.readers import (
    AZURE_TRACE_CITATION,
    AZURE_TRACES,
    parse_azure_csv,
    parse_request_log,
    read_azure_trace,
)
from npucenter.workload.slo import (
    SLO_PRESETS,
    Slo,
    distserve_goodput_rps,
    goodput_rps,
    latency_summary,
    meets_slo,
    slo_attainment,
    slo_from_spec,
)
from npucenter.workload.synthetic import (
    DiurnalArrivals,
    EmpiricalLengths,
    FixedLength,
    GammaArrivals,
    LogNormalLengths,
    PoissonArrivals,
    UniformLengths,
    synthetic_trace,
)
from npucenter.workload.trace import Trace, merge_traces

__all__ = [
    "AZURE_TRACES",
    "AZURE_TRACE_CITATION",
    "SLO_PRESETS",
    "DiurnalArrivals",
    "EmpiricalLengths",
    "FixedLength",
    "GammaArrivals",
    "LogNormalLengths",
    "PoissonArrivals",
    "Slo",
    "Trace",
    "UniformLengths",
    "distserve_goodput_rps",
    "goodput_rps",
    "latency_summary",
    "meets_slo",
    "merge_traces",
    "parse_azure_csv",
    "parse_request_log",
    "read_azure_trace",
    "slo_attainment",
    "slo_from_spec",
    "synthetic_trace",
]
