"""Twin job specs (npucenter.jobs.twin): what the API accepts for simulate/plan jobs."""

from __future__ import annotations

import numpy as np
import pytest

from npucenter.errors import InvalidConfigError, NotFoundError
from npucenter.fleet.model import default_fleet_mapping
from npucenter.jobs.simulate import quantiles
from npucenter.jobs.twin import MAX_SIM_REQUESTS, jsonable, sim_trace, twin_spec


def test_a_simulate_spec_keeps_the_fleet_inline_with_its_defaults() -> None:
    spec = twin_spec("simulate", {"fleet": default_fleet_mapping(), "num_requests": 10})
    assert spec["program"] == "simulate" and spec["fleet"]["name"] == "default"
    assert (spec["trace"], spec["policy"], spec["rate_scale"]) == (
        "conv",
        "least-outstanding-tokens",
        1.0,
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"num_requests": 0}, "num_requests"),
        ({"num_requests": MAX_SIM_REQUESTS + 1}, "num_requests"),
        ({"num_requests": True}, "num_requests"),
        ({"trace": "/etc/passwd"}, "trace"),
        ({"trace": "synthetic:-1"}, "trace"),
        ({"rate_scale": 0}, "rate_scale"),
        ({"seed": 1.5}, "seed"),
        ({"trace_file": "x"}, "trace_file"),
    ],
)
def test_a_bad_simulate_spec_names_its_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidConfigError) as err:
        twin_spec("simulate", {"fleet": default_fleet_mapping(), **change})
    assert field in str(err.value)


def test_unknown_policies_and_fleets_with_their_own_catalog_files_are_refused() -> None:
    with pytest.raises(NotFoundError):
        twin_spec("simulate", {"fleet": default_fleet_mapping(), "policy": "nope"})
    with pytest.raises(InvalidConfigError, match="catalog"):
        twin_spec("simulate", {"fleet": {**default_fleet_mapping(), "catalog": ["x.yaml"]}})
    with pytest.raises(InvalidConfigError, match="plan"):
        twin_spec("plan", {"verify": True})


def test_a_synthetic_trace_has_the_asked_count_and_the_packaged_one_its_head() -> None:
    assert len(sim_trace("synthetic:5", num_requests=30, seed=1)) == 30
    assert len(sim_trace("code", num_requests=12, seed=0)) == 12


def test_quantiles_skip_non_finite_values_and_json_has_no_nan() -> None:
    q = quantiles(np.array([3.0, np.nan, 1.0, 2.0, np.inf]), points=3)
    assert q == [1.0, 2.0, 3.0]
    assert quantiles(np.array([np.nan])) == []
    assert jsonable({"a": float("nan"), "b": np.float64(2.5), "c": [np.int64(3)]}) == {
        "a": None,
        "b": 2.5,
        "c": [3],
    }
