"""The dashboard page without a browser: health, missing replicas, tenants, refresh, headers."""

from __future__ import annotations

import asyncio
import re

import httpx
from fastapi import FastAPI

from factories import make_endpoint
from npucenter.clock import FakeClock
from npucenter.fleet import fleet_from_dict
from npucenter.gateway import Gateway, StaticKeyResolver
from npucenter.metering import UsageRecord, UsageTotals
from npucenter.web.dashboard import install_dashboard, render_dashboard
from npucenter.web.series import HistogramState, LiveSeries, Sample

FLEET = fleet_from_dict(
    {
        "name": "unit",
        "servers": [
            {"device": "rngd", "count": 1, "cards_per_server": 8},
            {"device": "h100", "count": 1, "cards_per_server": 8},
        ],
        "services": [
            {"model": "m", "device": "rngd", "tp": 1, "replicas_per_server": 2},
            {"model": "m", "device": "h100", "tp": 2, "replicas_per_server": 1},
        ],
        "tariff_usd_per_device_hour": {"rngd": 1.0},
    }
)


def _gateway(replica_ids: tuple[str, ...] = ("rngd-0-r0", "rngd-0-r1", "h100-0-r0")) -> Gateway:
    placed = {p.replica_id: p for p in FLEET.replicas()}
    return Gateway(
        keys=StaticKeyResolver({}),
        endpoints=[
            make_endpoint(
                replica_id=rid,
                base_url=f"http://127.0.0.1:{9000 + i}",
                device_id=placed[rid].device_id,
                device_kind="gpu" if rid.startswith("h100") else "npu",
                tp=placed[rid].tp,
            )
            for i, rid in enumerate(replica_ids)
        ],
        clock=FakeClock(),
    )


def _use(gw: Gateway, tenant: str, tokens_in: int, tokens_out: int, status: str = "ok") -> None:
    row = UsageRecord(
        request_id="r", tenant=tenant, key_id="k", service="m", endpoint="/v1/x",
        status=status, input_tokens=tokens_in, output_tokens=tokens_out, device_s=2.0,
        energy_j=50.0, cost_usd=0.001,
    )  # fmt: skip
    gw.usage_totals[(tenant, "m")] = gw.usage_totals.get((tenant, "m"), UsageTotals()).plus(row)


def _rows(html: str, section: str) -> list[list[str]]:
    table = html.split(f'aria-labelledby="{section}">', 2)[2].split("</tbody>")[0]
    return [
        [
            re.sub(r"<[^>]+>", "", c).strip()
            for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", r, re.S)
        ]
        for r in table.split("<tbody>")[1].split("</tr>")
        if "<t" in r
    ]


def test_servers_show_cards_in_use_and_health() -> None:
    gw = _gateway()
    gw.pool.mark_failed(gw.pool.get("h100-0-r0"), cooldown_s=30)  # type: ignore[arg-type]
    html = render_dashboard(gw, FLEET, now_wall_s=gw.started_wall_s + 5)
    servers = {r[0]: r for r in _rows(html, "fleet")}
    assert servers["rngd-0"][2:8] == ["NPU", "8", "2", "2 / 2", "0", "healthy"]
    assert servers["h100-0"][2:6] == ["GPU", "8", "2", "0 / 1"]
    assert servers["h100-0"][7] == "degraded: 1 of 1 replicas not up"
    assert servers["rngd-0"][8] == "1" and servers["h100-0"][8] == "—"  # tariff
    replicas = {r[0]: r for r in _rows(html, "replicas")}
    assert replicas["h100-0-r0"][5].startswith("cooling down (30 s left)")
    assert "2 of 3 replicas up" in html
    gw.pool.drain("rngd-0-r1")  # being scaled down: finishing its requests
    replicas = {r[0]: r for r in _rows(render_dashboard(gw, FLEET), "replicas")}
    assert replicas["rngd-0-r1"][5] == "draining"


def test_placed_replicas_without_an_engine_are_listed_once_the_fleet_is_launched() -> None:
    gw = _gateway(("rngd-0-r0",))
    html = render_dashboard(gw, FLEET)
    assert "not running" not in html  # no fleet launched: nothing is expected
    gw.expected_models = {"m"}
    replicas = {r[0]: r for r in _rows(render_dashboard(gw, FLEET), "replicas")}
    assert replicas["rngd-0-r0"][5] == "up"
    assert replicas["rngd-0-r1"][5].startswith("not running")
    assert replicas["h100-0-r0"][5].startswith("not running")


def test_tenants_are_sorted_by_tokens_with_a_total_row() -> None:
    gw = _gateway()
    _use(gw, "small", 1, 2)
    _use(gw, "big", 100, 1000)
    _use(gw, "big", 10, 0, status="error")
    html = render_dashboard(gw, FLEET)
    tenants = _rows(html, "tenants")
    assert [t[0] for t in tenants] == ["big", "small"]
    assert tenants[0][2:7] == ["2", "1", "110", "1,000", "1,110"]
    total = re.sub(r"<[^>]+>", " ", html.split("<tfoot>")[1].split("</tfoot>")[0]).split()
    assert total[:6] == ["all", "3", "1", "111", "1,002", "1,113"]
    assert 'id="stat-requests">3<' in html


def test_headline_and_charts_come_from_the_series() -> None:
    gw = _gateway()
    series = LiveSeries()
    bounds = (0.01, 0.1, float("inf"))
    for t, n, ttft in [(0, 0, (0, 0, 0)), (10, 20, (0, 10, 10)), (20, 40, (0, 20, 20))]:
        series.add(
            Sample(wall_s=1000.0 + t, num_requests=n, output_tokens=10 * n,
                   ttft=HistogramState(bounds, ttft, 0.0))
        )  # fmt: skip
    html = render_dashboard(gw, FLEET, series=series)
    assert 'id="stat-rate">2.00 <small>req/s' in html
    assert 'id="stat-ttft">96 ms<' in html  # p95 of 20 observations in (10 ms, 100 ms]
    assert "Request rate: latest 2, max 2 req/s" in html
    assert "−20 s" in html


async def _get(app: FastAPI, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 4242))
    async with httpx.AsyncClient(transport=transport, base_url="http://center") as http:
        return await http.get(path)


def test_page_reloads_itself_unless_paused_and_forbids_scripts() -> None:
    app = FastAPI()
    install_dashboard(app, _gateway(), FLEET)
    refresh = re.compile(r'http-equiv="refresh" content="(\d+)"')
    for query, want in [("", "5"), ("?refresh=2", "2"), ("?refresh=x", "5"), ("?refresh=1e9", "5"),
                        ("?refresh=99999", "3600"), ("?refresh=0", None)]:  # fmt: skip
        resp = asyncio.run(_get(app, f"/{query}"))
        assert resp.status_code == 200
        found = refresh.search(resp.text)
        assert (found.group(1) if found else None) == want, query
    csp = resp.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp
    assert resp.headers["cache-control"] == "no-store"
    assert "auto-refresh paused" in resp.text and 'href="?refresh=5"' in resp.text
