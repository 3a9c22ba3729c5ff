"""Fakes for the engine tests: the simulator's linear step-cost model with round numbers."""

from __future__ import annotations

import pytest

from factories import make_linear_step_cost
from npucenter.sim.fakes import LinearStepCost


@pytest.fixture
def perf() -> LinearStepCost:
    return make_linear_step_cost()
