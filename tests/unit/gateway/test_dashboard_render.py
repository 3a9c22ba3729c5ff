"""The dashboard renders well-formed HTML with escaped names, without a browser or a CDN."""

from __future__ import annotations

from html.parser import HTMLParser

from factories import make_endpoint
from npucenter.clock import FakeClock
from npucenter.fleet import default_fleet
from npucenter.gateway import Gateway, StaticKeyResolver
from npucenter.metering import UsageRecord, UsageTotals
from npucenter.render.svg import Series, bar_chart, line_chart
from npucenter.web.dashboard import render_dashboard

_VOID = {"meta", "br", "img", "input", "link", "hr", "rect", "polyline"}


class _Balance(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        if tag not in _VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def _gateway() -> Gateway:
    gw = Gateway(
        keys=StaticKeyResolver({}),
        endpoints=[
            make_endpoint(
                replica_id="rngd-0-r0",
                base_url="http://127.0.0.1:1",
                device_id="rngd",
            ),
            make_endpoint(
                replica_id="h100-0-r0",
                base_url="http://127.0.0.1:2",
                device_id="h100",
            ),
        ],
        clock=FakeClock(),
    )
    row = UsageRecord(
        request_id="r",
        tenant="<script>alert(1)</script>",
        key_id="k",
        service="m",
        endpoint="/v1/x",
        output_tokens=7,
    )
    gw.usage_totals[(row.tenant, "m")] = UsageTotals().plus(row)
    gw.history.extend([(0.0, 0, 0), (1.0, 1, 7), (2.0, 2, 20)])
    return gw


def test_page_is_well_formed_and_escapes_tenant_names() -> None:
    html = render_dashboard(_gateway(), default_fleet())
    parser = _Balance()
    parser.feed(html)
    assert not parser.errors and parser.stack == []
    assert {"svg", "table", "polyline"} <= parser.tags
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "rngd-0-r0" in html and "h100-0-r0" in html
    assert "http://" not in html.replace("http://127.0.0.1", "")  # nothing fetched from elsewhere


def test_charts_scale_and_handle_no_data() -> None:
    bars = bar_chart([("a", 10.0), ("b", 5.0)])
    widths = [float(part.split('"')[0]) for part in bars.split('width="')[2:]]
    assert widths[0] > widths[1] > 0
    assert "no data" in bar_chart([])
    assert "no data" in line_chart([Series("", [(0.0, None)])])
    assert "<polyline" in line_chart([Series("", [(0.0, 1.0), (1.0, 2.0)])])
