"""Hypothesis invariants of traces: rate scaling and splitting keep every request."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from npucenter.workload import FixedLength, PoissonArrivals, merge_traces, synthetic_trace


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(min_value=2, max_value=300),
    factor=st.floats(min_value=0.1, max_value=50.0),
    seed=st.integers(min_value=0, max_value=2**16),
    shares=st.lists(st.floats(min_value=0.1, max_value=5.0), min_size=1, max_size=4),
)
def test_scale_and_split_preserve_requests(n, factor, seed, shares):
    tr = synthetic_trace(
        num_requests=n,
        arrivals=PoissonArrivals(rate_rps=3.0),
        prompt=FixedLength(tokens=7),
        output=FixedLength(tokens=3),
        rng=np.random.default_rng(seed),
    )
    scaled = tr.scale_rate(factor)
    assert len(scaled) == n
    np.testing.assert_allclose(scaled.arrival_s * factor, tr.arrival_s, rtol=1e-9, atol=1e-9)
    names = {f"s{i}": w for i, w in enumerate(shares)}
    split = tr.split(names, np.random.default_rng(seed))
    parts = [split.for_service(s) for s in names]
    assert sum(len(p) for p in parts) == n
    merged = merge_traces(parts)
    np.testing.assert_array_equal(merged.arrival_s, tr.arrival_s)
