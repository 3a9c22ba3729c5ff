"""MLPerf Inference LLM scenarios as presets: arrival process, latency limits, data set statistics.

NOTE(workload): a scenario defines *how* requests arrive and which limits apply; the lengths come
from a data set's published statistics, a trace, or a row's stated lengths. Offline sends every
query at t = 0 and scores throughput only; Server sends queries as a Poisson process at a target
QPS and checks the 99th percentile of TTFT and TPOT against the benchmark's limits; Interactive
is the Server scenario under the tighter llama2-70b-interactive limits (MLPerf v5.0). The limits
are :data:`npucenter.workload.slo.SLO_PRESETS` (sourced from LoadGen's mlperf.conf). Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from npucenter.errors import InvalidConfigError, NotFoundError
from npucenter.workload.slo import SLO_PRESETS, Slo
from npucenter.workload.synthetic import EmpiricalLengths, LengthDistribution, PoissonArrivals
from npucenter.workload.trace import Trace

__all__ = [
    "LENGTHS_SEARCH_DOC",
    "MLPERF_DATASETS",
    "MLPERF_RULES_URL",
    "MLPERF_SCENARIOS",
    "OPENORCA_LLAMA2_70B",
    "DatasetStats",
    "MlperfScenario",
    "mlperf_dataset",
    "mlperf_scenario",
    "scenario_trace",
    "scenario_trace_from_spec",
]

#: The MLPerf Inference rules (scenario definitions: Offline, Server).
MLPERF_RULES_URL = (
    "https://github.com/mlcommons/inference_policies/blob/master/inference_rules.adoc"
)
_LLAMA2_README = (
    "https://github.com/mlcommons/inference/blob/00bf834669d3e343cda9f9c50da453aa2c067973/"
    "language/llama2-70b/README.md"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class MlperfScenario:
    """One MLPerf scenario: how queries arrive and the latency limits that apply."""

    name: str
    arrival: str  # "offline" (all at t = 0) or "poisson" (at a target QPS)
    slo: Slo
    source: str

    @property
    def needs_qps(self) -> bool:
        """Whether a run needs a target QPS (Server, Interactive)."""
        return self.arrival == "poisson"


@dataclass(frozen=True, slots=True, kw_only=True)
class DatasetStats:
    """Published statistics of a benchmark data set (None: not published in a source we hold)."""

    name: str
    num_samples: int
    max_input_tokens: int
    max_output_tokens: int
    mean_output_tokens: float | None
    mean_input_tokens: float | None
    source: str

    def missing_lengths(self) -> str:
        """Why a run of this data set cannot be given its lengths ('' when both means are known)."""
        missing = [
            what
            for what, value in (
                ("prompt", self.mean_input_tokens),
                ("output", self.mean_output_tokens),
            )
            if value is None
        ]
        if not missing:
            return ""
        known = (
            f"{self.num_samples:,} samples, prompts <= {self.max_input_tokens:,} and answers <= "
        )
        known += f"{self.max_output_tokens:,} tokens"
        if self.mean_output_tokens is not None:
            known += f", {self.mean_output_tokens:g} output tokens per sample"
        return (
            f"the mean {' and '.join(missing)} length of {self.name} is not published in a source "
            f"we hold (published: {known}; {self.source}); not guessed: where we looked is in "
            f"{LENGTHS_SEARCH_DOC}"
        )


#: MLPerf's processed OpenOrca set for llama2-70b: 24,576 samples, prompts and answers capped at
#: 1,024 tokens (``processorca.py --seqlen_limit=1024``), 294.45 generated tokens per sample in the
#: FP16 reference run. The mean prompt length is not stated there nor in any primary source we
#: found (the places searched are listed in docs/twin-fidelity.md section 5): not filled in, and
#: never guessed or fitted.
OPENORCA_LLAMA2_70B = DatasetStats(
    name="open-orca (mlperf llama2-70b)",
    num_samples=24_576,
    max_input_tokens=1024,
    max_output_tokens=1024,
    mean_output_tokens=294.45,
    mean_input_tokens=None,
    source=_LLAMA2_README,
)

#: The data set each MLPerf LLM benchmark's rows ran on, by the catalog's model name.
MLPERF_DATASETS: Mapping[str, DatasetStats] = {"Llama-2-70B": OPENORCA_LLAMA2_70B}

#: Where the search for the unpublished statistics is recorded (places and dates).
LENGTHS_SEARCH_DOC = "docs/twin-fidelity.md section 5 ('Where we looked')"

MLPERF_SCENARIOS: Mapping[str, MlperfScenario] = {
    "mlperf-offline": MlperfScenario(
        name="mlperf-offline",
        arrival="offline",
        slo=SLO_PRESETS["none"],
        source=f"Offline: LoadGen sends all queries at the start; throughput only ({MLPERF_RULES_URL})",
    ),
    "mlperf-server": MlperfScenario(
        name="mlperf-server",
        arrival="poisson",
        slo=SLO_PRESETS["mlperf-llama-2-70b"],
        source=f"Server: Poisson arrivals at a target QPS ({MLPERF_RULES_URL}); "
        + SLO_PRESETS["mlperf-llama-2-70b"].source,
    ),
    "mlperf-interactive": MlperfScenario(
        name="mlperf-interactive",
        arrival="poisson",
        slo=SLO_PRESETS["mlperf-llama-2-70b-interactive"],
        source=f"Server scenario under the llama2-70b-interactive limits ({_LLAMA2_README}); "
        + SLO_PRESETS["mlperf-llama-2-70b-interactive"].source,
    ),
}


def mlperf_scenario(name: str) -> MlperfScenario:
    """The preset ``name`` (``offline``, ``server``, ``interactive`` with or without ``mlperf-``)."""
    key = name.strip().lower().replace("_", "-")
    key = key if key.startswith("mlperf-") else f"mlperf-{key}"
    try:
        return MLPERF_SCENARIOS[key]
    except KeyError:
        raise NotFoundError("MLPerf scenario", name, valid=list(MLPERF_SCENARIOS)) from None


def mlperf_dataset(model: str) -> DatasetStats | None:
    """The MLPerf data set a benchmark of ``model`` runs on (None: no preset for that model)."""
    return MLPERF_DATASETS.get(model)


def scenario_trace(
    scenario: MlperfScenario,
    *,
    num_requests: int,
    prompt: LengthDistribution,
    output: LengthDistribution,
    rng: np.random.Generator,
    target_qps: float | None = None,
) -> Trace:
    """A trace of ``num_requests`` queries arriving as the scenario sends them."""
    if num_requests < 1:
        raise InvalidConfigError("num_requests", num_requests, "must be >= 1")
    if scenario.needs_qps:
        if target_qps is None or not target_qps > 0:
            raise InvalidConfigError(
                "target_qps", target_qps, f"{scenario.name} needs a target QPS > 0"
            )
        arrival = PoissonArrivals(rate_rps=target_qps).sample(num_requests, rng)
        arrival = arrival - arrival[0]
    else:
        arrival = np.zeros(num_requests)
    return Trace(
        name=scenario.name,
        arrival_s=arrival,
        prompt_tokens=prompt.sample(num_requests, rng),
        output_tokens=output.sample(num_requests, rng),
        source=f"{scenario.name}: {scenario.source}"[:300],
    )


def scenario_trace_from_spec(
    spec: str, *, lengths: Trace, num_requests: int, rng: np.random.Generator
) -> Trace:
    """``mlperf-offline`` or ``mlperf-server:QPS`` / ``mlperf-interactive:QPS`` as a trace.

    Lengths are resampled from ``lengths`` (a trace the caller picks: the data set's own prompt
    distribution is not published in a source we hold).
    """
    name, _, qps = spec.partition(":")
    scenario = mlperf_scenario(name)
    target: float | None = None
    if qps:
        try:
            target = float(qps)
        except ValueError as exc:
            raise InvalidConfigError("trace", spec, "use mlperf-server:QPS, e.g. 20") from exc
    trace = scenario_trace(
        scenario,
        num_requests=num_requests,
        prompt=EmpiricalLengths.from_array(lengths.prompt_tokens),
        output=EmpiricalLengths.from_array(lengths.output_tokens),
        rng=rng,
        target_qps=target,
    )
    return Trace(
        name=f"{scenario.name}" + (f"-{target:g}qps" if target else ""),
        arrival_s=trace.arrival_s,
        prompt_tokens=trace.prompt_tokens,
        output_tokens=trace.output_tokens,
        source=f"{trace.source}; lengths resampled from {lengths.name}"[:300],
    )
