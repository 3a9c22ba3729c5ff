"""Fair sharing by usage reads each tenant's decayed card-seconds from the ledger summed by the
database per time bucket (``api.admission.usage_history``): within 1.1 % of decaying every row
at its own time, rows beyond ten half-lives left out, other kinds of rows counted alike."""

from __future__ import annotations

import random

import pytest
from fastapi.testclient import TestClient

from npucenter.api.admission import usage_history

HALF_LIFE_S = 600.0


def _post(admin: TestClient, tenant: str, device_s: float) -> None:
    body = {"tenant": tenant, "kind": "job", "ref": "job:1 checkpoint", "device_seconds": device_s}
    assert admin.post("/api/usage", json=body).status_code == 201


def test_decayed_history_matches_the_per_row_decay(app, admin: TestClient, clock) -> None:
    for name in ("lab", "corp", "idle"):
        assert admin.post("/api/tenants", json={"name": name, "kind": "university"}).is_success
    rng = random.Random(7)
    t0 = clock.now_s()
    rows: list[tuple[str, float, float]] = []
    for _ in range(120):  # over 12 half-lives: the oldest fall out of the window
        clock.advance(rng.uniform(0.0, 120.0))
        tenant = rng.choice(("lab", "corp", "lab"))
        device_s = rng.uniform(1.0, 900.0)
        _post(admin, tenant, device_s)
        rows.append((tenant, clock.now_s(), device_s))
    now_s = clock.now_s() + 5.0
    assert now_s - t0 > 10 * HALF_LIFE_S  # some rows are older than the window

    exact: dict[str, float] = {}
    for tenant, at_s, device_s in rows:
        if at_s >= now_s - 10 * HALF_LIFE_S:
            exact[tenant] = exact.get(tenant, 0.0) + device_s * 0.5 ** (
                (now_s - at_s) / HALF_LIFE_S
            )
    with app.state.control.tx() as repo:
        got = usage_history(repo, now_s, HALF_LIFE_S)
    assert set(got) == {"lab", "corp"}  # a tenant with no usage has no history
    for tenant, value in exact.items():
        assert got[tenant] == pytest.approx(value, rel=0.011), tenant
    # the newest rows weigh most: a burst now moves its tenant ahead
    _post(admin, "corp", 50_000.0)
    with app.state.control.tx() as repo:
        after = usage_history(repo, clock.now_s(), HALF_LIFE_S)
    assert after["corp"] > got["corp"] + 40_000.0
