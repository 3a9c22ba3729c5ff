"""Per-request output of deterministic twin runs is unchanged by optimisations of the loop.

The digests were made by ``sim_digest.py --write`` with the code before incremental snapshots
and indexed routing (commit in the file); a mismatch means some request was routed or timed
differently.
"""

from __future__ import annotations

import json

import pytest
from sim_digest import DIGESTS, cases, digest

EXPECTED = json.loads(DIGESTS.read_text())["digests"]
CASES = dict(cases())


def test_every_case_has_a_stored_digest() -> None:
    assert set(CASES) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(CASES))
def test_per_request_output_matches_the_stored_digest(name: str) -> None:
    assert digest(CASES[name]()) == EXPECTED[name]
