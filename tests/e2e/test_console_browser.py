"""The console in a real browser: `npucenter up` on a tiny virtual fleet, two tenants signing in
with their keys in chromium (Playwright, the system's chromium), the API beside it.

A tenant signs in, sees its pages and the fleet, creates a key (shown once), sends requests
through /v1 and watches its usage rise, submits a job through the form and follows it, deploys a
service from the form and reads its engine's log, runs a small simulation as a job and sees its
charts; another tenant sees none of it, also by typing the first one's URLs; a POST without the
CSRF token is refused. The operator sees the fleet with its power, the tenants and the queue. ``NPUCENTER_CONSOLE_SHOTS=DIR`` also writes the screenshots there (docs/img/).
Needs chromium and playwright like tests/e2e/test_dashboard_browser.py; skipped without them.
"""

from __future__ import annotations

import os
import re
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

ADMIN = "e2e-console-admin-key-0123456789"
MODEL = "llama-3.1-8b"
FLEET = """\
name: console-e2e
servers:
  - {device: rngd, count: 1, cards_per_server: 8}
  - {device: h100, count: 1, cards_per_server: 8}
services:
  - {model: llama-3.1-8b, device: h100, tp: 1, replicas_per_server: 1, max_num_seqs: 64}
tariff_usd_per_device_hour: {rngd: 1.0, h100: 2.0}
slos: {llama-3.1-8b: {ttft_s: 10.0, tpot_s: 1.0}}
"""


def _chromium() -> str | None:
    candidates = [
        os.environ.get("NPUCENTER_CHROMIUM", ""),
        "/usr/lib/chromium/chromium",  # Debian's binary (never a downloaded browser)
        shutil.which("chromium") or "",
    ]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


@pytest.fixture(scope="module")
def center(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    tmp = tmp_path_factory.mktemp("console")
    (tmp / "fleet.yaml").write_text(FLEET)
    env = {**os.environ, "NPUCENTER_ADMIN_KEY": ADMIN}
    for name in ("NPUCENTER_VIRTUAL_FLEET", "NPUCENTER_FLEET", "NPUCENTER_OPEN_ENDPOINTS"):
        env.pop(name, None)
    args = ("--fleet", str(tmp / "fleet.yaml"), "--log-level", "warning")
    with running_up(tmp / "data", env, *args, sig=signal.SIGKILL) as up:
        admin = {"authorization": f"Bearer {ADMIN}"}
        keys = {"url": up.url}
        for name in ("acme", "globex"):
            httpx.post(
                f"{up.url}/api/tenants", json={"name": name, "kind": "company"}, headers=admin
            ).raise_for_status()
            httpx.put(
                f"{up.url}/api/quotas",
                json={"tenant": name, "device_type": "rngd", "nominal_cards": 2},
                headers=admin,
            ).raise_for_status()
            made = httpx.post(f"{up.url}/api/keys", json={"tenant": name}, headers=admin)
            keys[name] = made.raise_for_status().json()["key"]
        _wait_serving(up.url)
        yield keys


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
def new_page(browser: Any) -> Iterator[Any]:
    contexts: list[Any] = []

    def make() -> Any:
        context = browser.new_context(viewport={"width": 1280, "height": 860})
        contexts.append(context)
        pg = context.new_page()
        pg.set_default_timeout(10_000)
        problems: list[str] = []
        pg.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        pg.on("pageerror", lambda e: problems.append(str(e)))
        pg.on("request", lambda r: None if "127.0.0.1" in r.url else problems.append(r.url))
        pg.problems = problems
        return pg

    try:
        yield make
    finally:
        for context in contexts:
            context.close()


def _sign_in(page: Any, url: str, key: str) -> None:
    page.goto(f"{url}/console")
    assert page.url.endswith("/console/login")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r".*/console/(usage|fleet)$"))
    assert key not in page.url


def _shot(page: Any, name: str, tmp_path: Path) -> None:
    page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
    assert (tmp_path / f"{name}.png").stat().st_size > 5_000
    out = os.environ.get("NPUCENTER_CONSOLE_SHOTS")
    if out:
        page.screenshot(path=str(Path(out) / f"{name}.png"), full_page=True)


def _total_in(page: Any) -> int:
    return int(page.locator("#total-tokens-in").inner_text().replace(",", ""))


def test_a_tenant_uses_the_console_and_another_sees_none_of_it(
    center: dict[str, str], new_page: Any, tmp_path: Path
) -> None:
    url = center["url"]
    page = new_page()
    _sign_in(page, url, center["acme"])
    assert "signed in as tenant acme" in page.locator("#who").inner_text()
    assert page.locator("html").get_attribute("lang") == "en"
    before = _total_in(page)

    # create a key: shown once, and it works on /v1
    page.get_by_role("link", name="Keys").click()
    page.get_by_label("name").fill("from-the-browser")
    page.get_by_role("button", name="Create key").click()
    secret = page.locator("#new-key-secret").inner_text().strip()
    assert secret.startswith("npc_")
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=secret, max_retries=0, timeout=30)
    for text in ("Hello from the console test.", "One more, please."):
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": text}], max_tokens=8
        )
    page.reload()
    assert secret not in page.content()  # shown once
    assert "from-the-browser" in page.get_by_role("table", name="API keys").inner_text()

    # usage rises (the ledger is written in batches: reload until it shows, bounded)
    deadline = time.monotonic() + 20
    page.goto(f"{url}/console/usage")
    while _total_in(page) <= before and time.monotonic() < deadline:
        time.sleep(0.5)
        page.reload()
    assert _total_in(page) > before
    assert MODEL in page.get_by_role("table", name="Usage").inner_text()
    assert page.locator("#chart-usage svg polyline, #chart-usage svg circle").count() >= 1
    _shot(page, "console-usage", tmp_path)

    # submit a job through the form and follow it
    page.get_by_role("link", name="Jobs").click()
    page.get_by_label("name", exact=True).fill("browser-job")
    page.get_by_label("kind").select_option("benchmark")
    page.get_by_label("device type").fill("rngd")
    page.get_by_label("command (space-separated)").fill("echo console-says-hi")
    page.get_by_role("button", name="Submit job").click()
    page.wait_for_url(re.compile(r".*/console/jobs/\d+$"))
    job_path = page.url.split(url, 1)[1]
    assert page.locator("#job-state").inner_text() in ("queued", "admitted", "running", "succeeded")
    page.get_by_role("link", name="Jobs").click()
    assert "browser-job" in page.get_by_role("table", name="Jobs").inner_text()
    _shot(page, "console-jobs", tmp_path)
    page.get_by_role("link", name="Quotas").click()
    assert "rngd" in page.get_by_role("table", name=re.compile("Quotas")).inner_text()
    page.get_by_role("link", name="Fleet").click()
    assert page.locator("#fleet-grid .server").count() >= 1
    assert page.problems == []

    # the other tenant: none of acme's data, also by the URLs acme used
    other = new_page()
    _sign_in(other, url, center["globex"])
    for path in ("/console/usage", "/console/jobs", "/console/keys", "/console/queue"):
        other.goto(f"{url}{path}")
        text = other.locator("main").inner_text()
        assert "browser-job" not in text and "from-the-browser" not in text, path
        assert "acme" not in text, path
    resp = other.goto(f"{url}{job_path}")
    assert resp.status == 404
    assert "acme" not in other.content()

    # a POST without the CSRF token (another site's form, say) is refused
    refused = other.request.post(f"{url}/console/keys", form={"name": "forged"})
    assert refused.status == 403
    keys = httpx.get(f"{url}/api/keys", headers={"authorization": f"Bearer {center['globex']}"})
    assert "forged" not in keys.text


def test_the_operator_sees_the_fleet_and_the_queue(
    center: dict[str, str], new_page: Any, tmp_path: Path
) -> None:
    url = center["url"]
    page = new_page()
    _sign_in(page, url, ADMIN)
    assert page.url.endswith("/console/fleet")
    # at 1280 px the admin's header is one row: Sign out beside the links, not wrapped below
    out = page.get_by_role("button", name="Sign out").bounding_box()
    first = page.locator("header nav a").first.bounding_box()
    last = page.locator("header nav a").last.bounding_box()
    assert last["y"] == first["y"], (first, last)  # the links on one row
    mid = first["y"] + first["height"] / 2
    assert out["y"] < mid < out["y"] + out["height"], (out, first)  # Sign out on that row too
    grid = page.locator("#fleet-grid")
    shown = grid.inner_text()
    assert grid.locator(".server").count() == 2, shown
    assert grid.locator(".card").count() == 16, shown
    assert grid.locator(".s-serving").count() >= 1, page.content()  # the h100 replica's card
    _shot(page, "console-fleet", tmp_path)
    page.get_by_role("link", name="Quotas").click()
    assert page.get_by_label("nominal cards").count() == 1  # the admin's edit form
    _shot(page, "console-quotas", tmp_path)
    page.get_by_role("link", name="Queue").click()
    assert page.get_by_role("table", name=re.compile("Admission queue")).count() == 1
    page.keyboard.press("Tab")  # the first stop is the skip link
    skip = page.get_by_role("link", name="Skip to content")
    assert skip.evaluate("el => el === document.activeElement")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/console/login")
    page.goto(f"{url}/console/fleet")
    assert page.url.endswith("/console/login")
    assert page.problems == []


def test_a_tenant_deploys_runs_the_twin_and_reads_its_engine_logs(
    center: dict[str, str], new_page: Any, tmp_path: Path
) -> None:
    url = center["url"]
    page = new_page()
    _sign_in(page, url, center["acme"])

    # deploy a service from the form (the API's checks; acme's quota is 2 rngd cards)
    page.get_by_role("link", name="Deployments").click()
    page.get_by_label("name", exact=True).fill("ui-chat")
    page.get_by_label("model").fill(MODEL)
    page.get_by_label("device type").fill("rngd")
    page.get_by_label("precision").fill("fp8")
    page.get_by_role("button", name="Deploy").click()
    page.wait_for_url(re.compile(r".*/console/deployments/\d+$"))
    dep_path = page.url.split(url, 1)[1]
    # its replica's engine comes up; the page shows its state and log (reload, bounded)
    engine = page.locator("section.engine")
    deadline = time.monotonic() + 30
    while "· ready" not in (engine.first.inner_text() if engine.count() else ""):
        assert time.monotonic() < deadline, page.locator("main").inner_text()
        time.sleep(0.5)
        page.reload()
    assert f"virtual engine: {MODEL} on rngd" in engine.first.locator("pre").inner_text()
    # its SLO attainment (the fleet file's SLO for the model) over the streamed requests served
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=center["acme"], max_retries=0, timeout=30)
    for _ in range(2):  # a first token's time is known only when streamed
        for _chunk in client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4, stream=True
        ):
            pass
    pattern = re.compile(r"TTFT ≤ 10000 ms.*last \d+ s: \d+\.\d% of \d+ requests")
    deadline = time.monotonic() + 10  # the histograms are read at most once a second
    while True:
        page.reload()
        slo = page.locator("#dep-slo").inner_text()
        if pattern.search(slo) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert pattern.search(slo), slo
    _shot(page, "console-deployment", tmp_path)
    page.get_by_role("link", name="All deployments").click()
    cell = page.locator("#deployment-table tr", has_text="ui-chat").locator("td.slo-attained")
    assert re.fullmatch(r"\d+\.\d % of \d+", cell.inner_text().strip()), cell.inner_text()

    # run a small simulation of this center's fleet as a job; its page follows it to the report
    page.get_by_role("link", name="Twin").click()
    page.get_by_label("fleet").select_option("center")
    page.get_by_label("requests (first N)").fill("300")
    assert page.locator("#t-cards").input_value() == "0"  # the host's CPU
    page.get_by_role("button", name="Run simulation").click()
    page.wait_for_url(re.compile(r".*/console/twin/\d+$"))
    twin_path = page.url.split(url, 1)[1]
    deadline = time.monotonic() + 60  # the page reloads itself every 3 s while the job runs
    while page.locator("#job-state").inner_text() != "succeeded" and time.monotonic() < deadline:
        assert page.locator("#job-state").inner_text() in ("queued", "admitted", "running")
        time.sleep(1)
        page.reload()
    assert page.locator("#job-state").inner_text() == "succeeded", page.content()
    assert page.locator("#twin-charts svg").count() >= 3
    assert page.locator("#twin-charts svg polyline").count() >= 1
    _shot(page, "console-twin", tmp_path)
    assert page.problems == []

    # another tenant: neither the deployment nor the twin run, also by the URLs
    other = new_page()
    _sign_in(other, url, center["globex"])
    other.goto(f"{url}/console/deployments")
    assert "ui-chat" not in other.locator("#deployment-table").inner_text()
    for path in (dep_path, twin_path):
        resp = other.goto(f"{url}{path}")
        assert resp.status == 404, path
        assert "ui-chat" not in other.content() and "acme" not in other.content()
    other.goto(f"{url}/console/twin")
    assert twin_path not in other.content()

    # scale it, try bounds beyond the quota (the API's 409 shown), then delete it
    page.goto(f"{url}{dep_path}")
    page.get_by_label("replicas", exact=True).fill("2")
    page.get_by_role("button", name="Scale").click()
    page.wait_for_url(f"**{dep_path}")
    assert page.locator("#dep-placed").inner_text().endswith("/ 2")
    page.get_by_label("max replicas").fill("5")
    page.get_by_role("button", name="Set bounds").click()
    assert "quota" in page.locator("#dep-error").inner_text()
    assert page.get_by_label("max replicas").input_value() == "5"  # what was typed is kept
    page.get_by_role("button", name="Delete ui-chat").click()
    page.wait_for_url("**/console/deployments")
    assert "ui-chat" not in page.locator("#deployment-table").inner_text()
    assert page.goto(f"{url}{dep_path}").status == 404
    expected = ("(Conflict)", "(Not Found)")  # the 409 page and the 404 above, logged by chromium
    assert [m for m in page.problems if not m.endswith(expected)] == []


def test_the_operator_sees_tenants_and_power(
    center: dict[str, str], new_page: Any, tmp_path: Path
) -> None:
    url = center["url"]
    page = new_page()
    _sign_in(page, url, ADMIN)
    share = page.locator("#fleet-share").inner_text()
    assert "8 of 16 cards are NPUs (50 %)" in share, share  # one RNGD and one H100 server
    power = page.locator("#fleet-power").inner_text()
    assert re.search(r"Power now [\d,]+ W of the cards' TDP [\d,]+ W", power), power
    page.get_by_role("link", name="Tenants").click()
    table = page.get_by_role("table", name=re.compile("Tenants"))
    assert "acme" in table.inner_text() and "globex" in table.inner_text()
    _shot(page, "console-tenants", tmp_path)
    page.get_by_role("link", name="Edit the quotas of globex").click()
    assert page.get_by_label("tenant").input_value() == "globex"
    assert page.problems == []


def _wait_serving(url: str) -> None:
    deadline = time.monotonic() + 60
    admin = openai.OpenAI(base_url=f"{url}/v1", api_key=ADMIN, max_retries=0, timeout=30)
    while True:
        try:
            admin.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "warm up"}], max_tokens=1
            )
            return
        except openai.InternalServerError as exc:
            assert exc.status_code == 503 and time.monotonic() < deadline
            time.sleep(0.3)
