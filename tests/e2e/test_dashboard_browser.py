"""The dashboard in a real browser: `npucenter up` on a tiny virtual fleet, a tenant's requests
through /v1, and chromium (Playwright, the system's chromium) reading the page as an operator.

Needs chromium (``scripts/ensure-chromium.sh`` installs Debian's package; ``NPUCENTER_CHROMIUM``
names another binary) and the ``playwright`` Python package (dev extra); skipped without them.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from _center import running_up

pytestmark = pytest.mark.e2e

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed: pip install -e '.[dev]'"
)

ADMIN = "e2e-dashboard-admin-key-0123456789"
FLEET = """\
name: browser-e2e
servers:
  - {device: rngd, count: 1, cards_per_server: 8}
  - {device: h100, count: 1, cards_per_server: 8}
services:  # max_num_seqs: one fleet format, whose default (256) is the simulator's
  - {model: llama-3.1-8b, device: rngd, tp: 1, replicas_per_server: 1, max_num_seqs: 64}
  - {model: llama-3.1-8b, device: h100, tp: 1, replicas_per_server: 1, max_num_seqs: 64}
tariff_usd_per_device_hour: {rngd: 1.0, h100: 2.0}
"""
MODEL = "llama-3.1-8b"


def _chromium() -> str | None:
    candidates = [
        os.environ.get("NPUCENTER_CHROMIUM", ""),
        "/usr/lib/chromium/chromium",  # Debian's binary (/usr/bin/chromium is a shell wrapper)
        shutil.which("chromium") or "",
        shutil.which("chromium-browser") or "",
        shutil.which("google-chrome") or "",
    ]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


class Center:
    """A running `npucenter up` and a tenant with a key."""

    def __init__(self, url: str, tenant_key: str) -> None:
        self.url = url
        self.tenant_key = tenant_key
        self.usage = {"requests": 0, "prompt": 0, "completion": 0}

    def client(self, key: str | None = None) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.url}/v1", api_key=key or self.tenant_key, max_retries=0, timeout=30
        )

    def ask(self, text: str, *, max_tokens: int, stream: bool) -> None:
        """One request as the tenant; its usage (as the response reports it) is added up."""
        messages: Any = [{"role": "user", "content": text}]
        if stream:
            chunks = list(
                self.client().chat.completions.create(
                    model=MODEL,
                    messages=messages,
                    max_tokens=max_tokens,
                    stream=True,
                    stream_options={"include_usage": True},
                )
            )
            usage = next(c.usage for c in reversed(chunks) if c.usage is not None)
        else:
            out = self.client().chat.completions.create(
                model=MODEL, messages=messages, max_tokens=max_tokens
            )
            assert out.usage is not None
            usage = out.usage
        self.usage["requests"] += 1
        self.usage["prompt"] += usage.prompt_tokens
        self.usage["completion"] += usage.completion_tokens


@pytest.fixture(scope="module")
def center(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Center]:
    tmp = tmp_path_factory.mktemp("center")
    (tmp / "fleet.yaml").write_text(FLEET)
    env = {**os.environ, "NPUCENTER_ADMIN_KEY": ADMIN}
    for name in ("NPUCENTER_VIRTUAL_FLEET", "NPUCENTER_FLEET", "FORWARDED_ALLOW_IPS"):
        env.pop(name, None)
    args = ("--fleet", str(tmp / "fleet.yaml"), "--log-level", "warning")
    with running_up(tmp / "data", env, *args, sig=signal.SIGKILL) as up:
        url = up.url
        admin = {"authorization": f"Bearer {ADMIN}"}
        httpx.post(
            f"{url}/api/tenants", json={"name": "acme", "kind": "company"}, headers=admin
        ).raise_for_status()
        made = httpx.post(f"{url}/api/keys", json={"tenant": "acme"}, headers=admin)
        key = made.raise_for_status().json()["key"]
        center = Center(url, key)
        _wait_serving(center)
        yield center


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = _chromium()
    if executable is None:
        pytest.skip("no chromium: run scripts/ensure-chromium.sh or set NPUCENTER_CHROMIUM")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=executable, args=["--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(10_000)
    problems: list[str] = []
    pg.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: problems.append(str(e)))
    pg.on(
        "request",
        lambda r: None if r.url.startswith("http://127.0.0.1:") else problems.append(r.url),
    )
    pg.problems = problems
    try:
        yield pg
    finally:
        context.close()


def test_tables_and_charts_show_the_tenants_usage(
    center: Center, page: Any, tmp_path: Path
) -> None:
    center.ask("Hello from the browser test.", max_tokens=12, stream=False)
    center.ask("Stream a few tokens, please.", max_tokens=9, stream=True)
    center.ask("And one more stream.", max_tokens=15, stream=True)
    resp = _open_when_charted(page, center.url)  # the sampler ticks every second
    assert resp.status == 200
    assert "script-src" not in resp.headers["content-security-policy"]  # no script may run
    assert page.title() == "npucenter — browser-e2e"

    fleet = _table(page, "Fleet")
    assert [r[0] for r in fleet] == ["rngd-0", "h100-0"]
    assert [(r[2], r[3], r[4], r[5], r[7]) for r in fleet] == [
        ("NPU", "8", "1", "1 / 1", "healthy"),
        ("GPU", "8", "1", "1 / 1", "healthy"),
    ]

    replicas = {r[0]: r for r in _table(page, "Replicas")}
    assert set(replicas) == {"rngd-0-r0", "h100-0-r0"}
    assert all(r[5] == "up" and r[6] == "0 / 64" for r in replicas.values())
    assert replicas["rngd-0-r0"][1] == "rngd-0" and replicas["h100-0-r0"][3] == "h100"

    tenants = {r[0]: r for r in _table(page, "Tenants")}
    acme = tenants["acme"]
    u = center.usage
    assert acme[1] == MODEL and _int(acme[2]) == u["requests"] and acme[3] == "0"
    assert (_int(acme[4]), _int(acme[5])) == (u["prompt"], u["completion"])
    assert _int(acme[6]) == u["prompt"] + u["completion"]
    assert float(acme[8]) > 0 and _float(acme[9]) > 0 and float(acme[10]) > 0
    # every request that did not fail (the operator's warm-up ones too; those sent while the
    # replicas started failed with 503) was served by one of the replicas
    served = sum(_int(r[10]) for r in replicas.values())
    assert served == sum(_int(t[2]) - _int(t[3]) for t in tenants.values())
    assert _int(page.locator("#stat-requests").inner_text()) == sum(
        _int(t[2]) for t in tenants.values()
    )

    # tokens by tenant: acme's bar is labelled with its token count
    bars = page.locator("#chart-tenants svg")
    assert (
        f"acme: {u['prompt'] + u['completion']:,} tokens"
        in bars.locator(":scope > title").text_content()
    )
    # the live charts drew lines; the TTFT one from the two streamed requests
    for chart in ("rate", "throughput", "ttft", "tpot"):
        svg = page.locator(f"#chart-{chart} svg")
        assert svg.get_attribute("role") == "img", chart
        assert svg.locator("polyline, circle").count() >= 1, chart
        assert "max" in svg.locator(":scope > title").text_content(), chart
    box = page.locator("#chart-rate svg").bounding_box()
    assert box is not None and box["width"] > 300 and box["height"] > 100

    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert page.problems == []


def test_auto_refresh_updates_the_numbers(center: Center, page: Any) -> None:
    page.goto(f"{center.url}/?refresh=1")
    before = _int(page.locator("#stat-requests").inner_text())
    center.ask("Refresh, please.", max_tokens=4, stream=False)
    # the page reloads itself: the locators below wait for a reload that shows the request
    sync_api.expect(page.locator("#stat-requests")).to_have_text(f"{before + 1:,}", timeout=8000)
    acme = (
        page.get_by_role("table", name="Tenants")
        .locator("tbody tr")
        .filter(has=page.get_by_role("rowheader", name="acme", exact=True))
    )
    total = center.usage["prompt"] + center.usage["completion"]
    sync_api.expect(acme.locator("td").nth(5)).to_have_text(f"{total:,}", timeout=8000)
    assert page.url.endswith("?refresh=1")  # the reload keeps the chosen period

    page.get_by_role("link", name="pause auto-refresh").click()
    page.wait_for_url("**/?refresh=0")
    assert page.locator('meta[http-equiv="refresh"]').count() == 0
    assert "auto-refresh paused" in page.locator("#refresh-status").inner_text()
    assert page.problems == []


def test_remote_clients_need_the_admin_key(center: Center, browser: Any) -> None:
    # A reverse proxy on this host forwards a remote client: uvicorn trusts X-Forwarded-For
    # from loopback, so the dashboard sees the remote address and asks for the admin key.
    remote = {"x-forwarded-for": "203.0.113.7"}
    tenant_basic = "Basic " + base64.b64encode(f":{center.tenant_key}".encode()).decode()
    cases: list[tuple[dict[str, Any], int]] = [
        ({}, 401),  # no credentials
        ({"extra_http_headers": {**remote, "authorization": tenant_basic}}, 401),  # not admin
        ({"http_credentials": {"username": "ops", "password": ADMIN}}, 200),  # the browser's prompt
    ]
    for options, want in cases:
        context = browser.new_context(**{"extra_http_headers": remote, **options})
        try:
            pg = context.new_page()
            if want == 401:
                # the browser gets no page (Playwright cancels the Basic-auth prompt) ...
                with pytest.raises(sync_api.Error, match="ERR_INVALID_AUTH_CREDENTIALS"):
                    pg.goto(f"{center.url}/?refresh=0")
                # ... and the same request from the context says why, leaking no usage
                resp = context.request.get(f"{center.url}/?refresh=0")
                assert resp.status == 401, options
                assert resp.headers["www-authenticate"].startswith("Basic")
                assert "admin key" in resp.text() and "acme" not in resp.text()
            else:
                page_resp = pg.goto(f"{center.url}/?refresh=0")
                assert page_resp.status == 200
                assert _table(pg, "Tenants")[0][0] == "acme"
        finally:
            context.close()


def test_layout_is_accessible(center: Center, page: Any) -> None:
    page.goto(f"{center.url}/?refresh=0")
    assert page.locator("html").get_attribute("lang") == "en"
    assert page.get_by_role("main").count() == 1
    for name in ("Fleet", "Replicas", "Tenants"):
        table = page.get_by_role("table", name=name)
        assert table.count() == 1, name
        assert table.locator("thead th[scope=col]").count() >= 5, name
    for svg in page.locator("svg").all():  # every chart says what it shows in words
        assert svg.get_attribute("role") == "img"
        assert svg.locator(":scope > title").text_content().strip()
    assert page.locator("h1").count() == 1
    page.keyboard.press("Tab")  # the first stop is the skip link, and it shows
    skip = page.get_by_role("link", name="Skip to content")
    assert skip.evaluate("el => el === document.activeElement")
    assert skip.bounding_box()["x"] >= 0
    page.set_viewport_size({"width": 420, "height": 800})  # a phone: nothing wider than the page
    assert page.evaluate("document.documentElement.scrollWidth") <= 420
    assert page.problems == []


def _open_when_charted(page: Any, url: str) -> Any:
    """Open the (paused) page until the sampler has drawn the TTFT and request-rate lines."""
    deadline = time.monotonic() + 15
    while True:
        resp = page.goto(f"{url}/?refresh=0")
        drawn = [page.locator(f"#chart-{c} svg polyline").count() for c in ("ttft", "rate")]
        if all(drawn) or time.monotonic() > deadline:
            return resp
        time.sleep(0.5)


def _table(page: Any, name: str) -> list[list[str]]:
    rows = page.get_by_role("table", name=name).locator("tbody tr")
    return [[c.strip() for c in row.locator("th, td").all_inner_texts()] for row in rows.all()]


def _int(text: str) -> int:
    return int(text.replace(",", "").strip())


def _float(text: str) -> float:
    return float(text.replace(",", "").strip())


def _wait_serving(center: Center) -> None:
    """Both replicas answer (warm-up requests go in as the operator, not as acme)."""
    deadline = time.monotonic() + 60
    admin = center.client(ADMIN)
    while True:
        try:
            admin.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "warm up"}], max_tokens=1
            )
            break
        except openai.InternalServerError as exc:
            assert exc.status_code == 503 and time.monotonic() < deadline
            time.sleep(0.3)
