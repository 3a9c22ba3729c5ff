"""Deployments' SLO attainment in the API and the console, from requests a gateway serves.

A gateway (served on loopback) forwards to a scripted upstream; its TTFT histogram is what the
deployment's attainment is read from (live/attainment.py, as `npucenter up` wires it). Slow first
tokens make the figure fall in ``GET /api/deployments/ID``, the console's list and the page; the
fast requests leave it once they are older than the window (a fake clock).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from factories import make_endpoint
from npucenter.api import create_app
from npucenter.fleet import fleet_from_dict
from npucenter.gateway import Gateway, Principal, StaticKeyResolver
from npucenter.gateway.testing import running_server
from npucenter.live.attainment import install_slo_attainment
from npucenter.settings import Settings
from npucenter.web.console import install_console
from npucenter.wire.fake import FakeOpenAI, FakeScript

ADMIN = "npc_console_slo_admin_key_0123456789"
MODEL = "llama-3.1-8b"
FLEET = {
    "servers": [{"device": "h100", "count": 1, "cards_per_server": 4}],
    "services": [{"model": MODEL, "device": "h100"}],
    "slos": {MODEL: {"ttft_s": 0.25, "tpot_s": 1.0}},  # TTFT edge 0.25 s in the gateway's buckets
}


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[dict[str, Any]]:
    settings = Settings(
        data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/c.db", admin_key=ADMIN
    )
    app = create_app(settings)
    install_console(app)
    upstream = FakeOpenAI(FakeScript(output_tokens=2))
    clock = [1000.0]
    with running_server(upstream, lifespan="off") as up_url:
        gw = Gateway(
            keys=StaticKeyResolver({"sk-lab": Principal(key_id="k", tenant="lab")}),
            endpoints=[make_endpoint(replica_id="r0", base_url=up_url, model_id=MODEL)],
        )
        window = install_slo_attainment(
            app.state.control, gw, fleet_from_dict(FLEET), now_s=lambda: clock[0], cache_s=0.0
        )
        with running_server(gw) as gw_url:
            yield {"app": app, "gw": gw_url, "up": upstream, "window": window, "clock": clock}
    app.state.control.db.dispose()


def _complete(gw_url: str, n: int) -> None:
    with httpx.Client(base_url=gw_url, timeout=20.0) as client:
        for _ in range(n):
            r = client.post(
                "/v1/completions",
                headers={"authorization": "Bearer sk-lab"},
                json={"model": MODEL, "prompt": "hi", "max_tokens": 2, "stream": True},
            )
            assert r.status_code == 200, r.text


def test_attainment_falls_when_slow_requests_are_served_and_is_shown(rig) -> None:
    app = rig["app"]
    admin = TestClient(app, headers={"authorization": f"Bearer {ADMIN}"})
    assert admin.post("/api/tenants", json={"name": "lab", "kind": "university"}).is_success
    assert admin.put(
        "/api/quotas", json={"tenant": "lab", "device_type": "h100", "nominal_cards": 2}
    ).is_success
    assert admin.post("/api/servers", json={"name": "s1", "device_type": "h100", "num_cards": 4})
    key = admin.post("/api/keys", json={"tenant": "lab", "name": "k"}).json()["key"]
    lab = TestClient(app, headers={"authorization": f"Bearer {key}"})
    dep = lab.post(
        "/api/deployments", json={"name": "chat", "model": MODEL, "device_type": "h100"}
    ).json()
    other = lab.post(
        "/api/deployments", json={"name": "qwen", "model": "qwen2.5-7b", "device_type": "h100"}
    ).json()

    def attained(dep_id: int) -> Any:
        return lab.get(f"/api/deployments/{dep_id}").json()["slo_attainment"]

    window, clock = rig["window"], rig["clock"]
    window.sample()
    got = attained(dep["id"])
    assert got["slo"] == "custom" and got["ttft_s"] == 0.25 and got["fraction"] is None
    assert attained(other["id"]) is None  # the fleet file names no SLO for that model
    _complete(rig["gw"], 4)  # fast first tokens
    got = attained(dep["id"])
    assert (got["num_requests"], got["fraction"]) == (4, 1.0), got
    clock[0] += 100.0
    window.sample()
    rig["up"].script = FakeScript(output_tokens=2, ttft_s=0.4)  # slow: over the 0.25 s TTFT SLO
    _complete(rig["gw"], 2)
    got = attained(dep["id"])
    assert got["num_requests"] == 6 and got["ttft_met_fraction"] == pytest.approx(4 / 6), got
    assert got["fraction"] == pytest.approx(4 / 6)
    listed = {d["id"]: d["slo_attainment"] for d in lab.get("/api/deployments").json()}
    assert listed[dep["id"]]["num_requests"] == 6

    # the console: the list's column and the deployment's page (a browser without script)
    browser = TestClient(app, base_url="https://testserver", follow_redirects=False)
    form = browser.get("/console/login").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)  # type: ignore[union-attr]
    assert browser.post("/console/login", data={"csrf": csrf, "key": key}).status_code == 303
    page = browser.get("/console/deployments").text
    assert "66.67 % of 6" not in page and "66.7 % of 6" in page
    shown = browser.get(f"/console/deployments/{dep['id']}").text
    assert re.search(
        r'id="dep-slo">custom \(TTFT ≤ 250 ms, TPOT ≤ 1000 ms\), last \d+ s: 66\.7%', shown
    )

    # past the window, the fast requests are no longer counted
    clock[0] += 301.0  # the baseline is now the snapshot taken after the fast ones
    window.sample()
    got = attained(dep["id"])
    assert (got["num_requests"], got["fraction"]) == (2, 0.0), got


@pytest.fixture
def postgres_url() -> Iterator[str]:
    import os
    import uuid

    base = os.environ.get("NPUCENTER_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("NPUCENTER_TEST_POSTGRES_URL is not set (make test starts a server)")
    import psycopg

    name = f"npc_slo_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield base.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.postgres
def test_other_gateways_published_histograms_count_and_leave_with_them(
    tmp_path: Path, postgres_url: str
) -> None:
    import time

    from npucenter.live.load import gateway_load
    from npucenter.store import coordination

    settings = Settings(data_dir=tmp_path, database_url=postgres_url, admin_key=ADMIN)
    app = create_app(settings)
    try:
        db = app.state.control.db
        mine, other = (
            Gateway(
                keys=StaticKeyResolver({}),
                endpoints=[make_endpoint(replica_id=f"r{i}", model_id=MODEL)],  # a known label
            )
            for i in range(2)
        )
        mine.metrics.ttft.labels(MODEL).observe(0.05)  # fast here
        other.metrics.ttft.labels(MODEL).observe(0.9)  # slow at the other gateway
        window = install_slo_attainment(
            app.state.control, mine, fleet_from_dict(FLEET), own_row="load/me-1", cache_s=0.0
        )
        coordination.publish(db, "load/me-1", gateway_load(mine), now_s=time.time())  # not twice
        coordination.publish(db, "load/other-7", gateway_load(other), now_s=time.time())
        got = app.state.control.slo_attainment("lab", "chat", MODEL)
        assert (got["num_requests"], got["ttft_met_fraction"]) == (2, 0.5), got
        window.sample()
        coordination.unpublish(db, "load/other-7")  # it stopped: its request leaves the figure
        got = app.state.control.slo_attainment("lab", "chat", MODEL)
        assert (got["num_requests"], got["ttft_met_fraction"]) == (1, 1.0), got
    finally:
        app.state.control.db.dispose()
