"""The console (web/console.py) on the control-plane app: sign-in, scope, CSRF, forms.

Every page is the API's own functions under the signed-in key; these tests drive the pages the
way a browser without JavaScript does (form posts, cookies) and check what one tenant can see of
another's (nothing: 404, also by URL).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from npucenter.api import create_app
from npucenter.settings import Settings
from npucenter.web.console import SESSION_COOKIE, install_console

ADMIN = "npc_console_test_admin_key_0123456789"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[object]:
    settings = Settings(
        data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/c.db", admin_key=ADMIN
    )
    app = create_app(settings)
    install_console(app)
    yield app
    app.state.control.db.dispose()


def _api(app: object, key: str) -> TestClient:
    return TestClient(app, headers={"authorization": f"Bearer {key}"})  # type: ignore[arg-type]


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


def _browser(app: object) -> TestClient:
    return TestClient(app, base_url="https://testserver", follow_redirects=False)  # type: ignore[arg-type]


def _sign_in(app: object, key: str) -> TestClient:
    browser = _browser(app)
    form = browser.get("/console/login")
    response = browser.post("/console/login", data={"csrf": _csrf(form.text), "key": key})
    assert response.status_code == 303, response.text
    assert key not in response.headers["location"]
    return browser


@pytest.fixture
def center(app: object) -> dict[str, str]:
    admin = _api(app, ADMIN)
    keys = {}
    for name in ("lab", "corp"):
        assert admin.post("/api/tenants", json={"name": name, "kind": "university"}).is_success
        assert admin.put(
            "/api/quotas", json={"tenant": name, "device_type": "h100", "nominal_cards": 2}
        ).is_success
        keys[name] = admin.post("/api/keys", json={"tenant": name, "name": "k"}).json()["key"]
    assert admin.post(
        "/api/servers", json={"name": "s1", "device_type": "h100", "num_cards": 4}
    ).is_success
    return keys


def test_sign_in_sets_a_strict_httponly_session_and_sign_out_ends_it(app, center) -> None:
    browser = _browser(app)
    assert browser.get("/console").headers["location"] == "/console/login"
    page = browser.get("/console/login")
    assert page.status_code == 200
    assert "script-src" not in page.headers["content-security-policy"]  # default-src 'none'
    bad = browser.post("/console/login", data={"csrf": _csrf(page.text), "key": "npc_nope"})
    assert bad.status_code == 401
    ok = browser.post("/console/login", data={"csrf": _csrf(page.text), "key": center["lab"]})
    cookie = ok.headers["set-cookie"]
    assert SESSION_COOKIE in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Secure" in cookie  # the test client is not on loopback
    usage = browser.get("/console/usage")
    assert usage.status_code == 200 and "signed in as tenant lab" in usage.text
    out = browser.post("/console/logout", data={"csrf": _csrf(usage.text)})
    assert out.status_code == 303
    assert browser.get("/console/usage").headers["location"] == "/console/login"


def test_a_post_without_the_csrf_token_is_refused(app, center) -> None:
    browser = _sign_in(app, center["lab"])
    assert browser.post("/console/keys", data={"name": "x"}).status_code == 403
    assert browser.post("/console/keys", data={"name": "x", "csrf": "guess"}).status_code == 403
    fresh = _browser(app)  # the sign-in form's own token
    fresh.get("/console/login")
    assert fresh.post("/console/login", data={"key": center["lab"]}).status_code == 403
    keys = _api(app, center["lab"]).get("/api/keys").json()
    assert [k["name"] for k in keys] == ["k"]  # nothing was created


def test_a_tenant_creates_and_revokes_keys_and_sees_its_jobs_and_usage(app, center) -> None:
    browser = _sign_in(app, center["lab"])
    page = browser.get("/console/keys")
    created = browser.post("/console/keys", data={"csrf": _csrf(page.text), "name": "ci"})
    assert created.status_code == 201
    secret = re.search(r'id="new-key-secret">([^<]+)<', created.text).group(1)
    assert _api(app, secret).get("/api/whoami").json()["tenant"] == "lab"
    assert secret not in browser.get("/console/keys").text  # shown once
    key_id = next(k["id"] for k in _api(app, secret).get("/api/keys").json() if k["name"] == "ci")
    revoked = browser.post(f"/console/keys/{key_id}/revoke", data={"csrf": _csrf(page.text)})
    assert revoked.status_code == 303
    assert _api(app, secret).get("/api/whoami").status_code == 401

    jobs = browser.get("/console/jobs")
    submitted = browser.post(
        "/console/jobs",
        data={
            "csrf": _csrf(jobs.text),
            "name": "bench-1",
            "kind": "benchmark",
            "device_type": "h100",
            "num_cards": "1",
            "command": "echo hi",
        },
    )
    assert submitted.status_code == 303, submitted.text
    job_id = int(submitted.headers["location"].rsplit("/", 1)[1])
    assert [j["id"] for j in _api(app, center["lab"]).get("/api/jobs").json()] == [job_id]
    assert "bench-1" in browser.get("/console/jobs").text
    detail = browser.get(f"/console/jobs/{job_id}")
    assert detail.status_code == 200 and 'id="job-state"' in detail.text

    before = browser.get("/console/usage").text
    assert 'id="total-tokens-in">0<' in before
    _api(app, ADMIN).post(
        "/api/usage",
        json={
            "tenant": "lab",
            "kind": "tokens",
            "tokens_in": 1200,
            "tokens_out": 34,
            "ref": "/v1/chat/completions llama-3.1-8b 200 r1 key-1 rep-0",
        },
    )
    after = browser.get("/console/usage").text
    assert 'id="total-tokens-in">1,200<' in after and "llama-3.1-8b" in after
    assert "<svg" in after
    csv_text = browser.get("/console/usage.csv").text
    assert csv_text.splitlines()[0].startswith("id,") and ",1200," in csv_text


def test_another_tenant_sees_none_of_it_also_by_guessed_urls(app, center) -> None:
    lab = _api(app, center["lab"])
    job = lab.post(
        "/api/jobs",
        json={
            "name": "secret-job",
            "kind": "benchmark",
            "device_type": "h100",
            "command": ["true"],
        },
    ).json()
    _api(app, ADMIN).post("/api/usage", json={"tenant": "lab", "kind": "tokens", "tokens_in": 77})
    lab_key_id = lab.get("/api/keys").json()[0]["id"]

    corp = _sign_in(app, center["corp"])
    for path in (
        "/console/jobs",
        "/console/usage",
        "/console/keys",
        "/console/quotas",
        "/console/queue",
        "/console/usage.csv",
        "/console/fleet",
    ):
        page = corp.get(path)
        assert page.status_code == 200, path
        assert "secret-job" not in page.text and ">lab<" not in page.text, path
        assert ",lab," not in page.text, path
    assert corp.get(f"/console/jobs/{job['id']}").status_code == 404
    csrf = _csrf(corp.get("/console/keys").text)
    assert corp.post(f"/console/keys/{lab_key_id}/revoke", data={"csrf": csrf}).status_code == 404
    assert corp.post(f"/console/jobs/{job['id']}/cancel", data={"csrf": csrf}).status_code == 404
    assert lab.get("/api/whoami").status_code == 200  # still valid
    assert lab.get(f"/api/jobs/{job['id']}").json()["state"] != "cancelled"


def test_the_admin_edits_quotas_through_the_apis_validation(app, center) -> None:
    admin = _sign_in(app, ADMIN)
    page = admin.get("/console/quotas")
    assert ">lab<" in page.text and ">corp<" in page.text
    csrf = _csrf(page.text)
    bad = admin.post(
        "/console/quotas",
        data={"csrf": csrf, "tenant": "lab", "device_type": "h100", "nominal_cards": "-1"},
    )
    assert bad.status_code == 422 and "nominal_cards" in bad.text
    good = admin.post(
        "/console/quotas",
        data={
            "csrf": csrf,
            "tenant": "lab",
            "device_type": "h100",
            "nominal_cards": "3",
            "borrowing_limit_cards": "1",
        },
    )
    assert good.status_code == 303, good.text
    quota = next(q for q in _api(app, ADMIN).get("/api/quotas").json() if q["tenant"] == "lab")
    assert (quota["nominal_cards"], quota["borrowing_limit_cards"]) == (3, 1)
    tenant = _sign_in(app, center["corp"])  # a tenant cannot
    refused = tenant.post(
        "/console/quotas",
        data={
            "csrf": _csrf(tenant.get("/console/quotas").text),
            "tenant": "corp",
            "device_type": "h100",
            "nominal_cards": "50",
        },
    )
    assert refused.status_code == 403
    fleet = admin.get("/console/fleet")
    assert fleet.status_code == 200 and "s1" in fleet.text and fleet.text.count("card s-") == 4


def test_the_proving_ground_is_private_unless_opened(app, center, tmp_path) -> None:
    assert _browser(app).get("/console/results").status_code == 303
    settings = Settings(
        data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/c.db", admin_key=ADMIN
    )
    open_app = create_app(settings)
    install_console(open_app, public_results=True)
    page = _browser(open_app).get("/console/results")
    assert page.status_code == 200 and "Proving ground" in page.text
    open_app.state.control.db.dispose()


def _bench_doc(device: str, e2e: float) -> dict[str, object]:
    from npucenter.bench.metrics import summarize
    from npucenter.bench.record import RequestRecord
    from npucenter.bench.result import build_result

    records = [
        RequestRecord(
            index=i,
            scheduled_s=i * 0.1,
            start_s=i * 0.1,
            lag_s=0.0,
            ttft_s=0.1,
            e2e_s=e2e,
            itl_s=(0.01,) * 19,
            prompt_tokens=100,
            target_input_tokens=100,
            target_output_tokens=20,
            output_tokens=20,
            usage_reported=True,
            ok=True,
        )
        for i in range(20)
    ]
    return build_result(
        kind="run",
        scenario={"name": "chat", "arrival": "poisson", "rate_rps": 10},
        endpoint={"model": "llama-3.1-8b", "base_url": "http://127.0.0.1:1"},
        summary=summarize(records),
        records=records,
        device=device,
        label=f"{device} run",
        extra={"target": {"device": device}},
    )


def test_the_proving_ground_shows_results_side_by_side_and_a_page_per_run(app, center) -> None:
    lab = _api(app, center["lab"])
    ids = []
    for device, e2e in (("rngd", 1.0), ("h100", 2.0)):
        job = lab.post(
            "/api/jobs",
            json={
                "name": f"bench-{device}",
                "kind": "benchmark",
                "device_type": "h100",
                "command": ["true"],
            },
        ).json()
        assert lab.put(f"/api/jobs/{job['id']}/result", json=_bench_doc(device, e2e)).is_success
        ids.append(job["id"])
    browser = _sign_in(app, center["lab"])
    page = browser.get("/console/results")
    table = page.text[page.text.index('id="results-table"') :]
    assert table.index(">h100<") < table.index(">rngd<")  # side by side, by device
    assert "<svg" in page.text  # tokens per second by run
    report = browser.get(f"/console/results/{ids[0]}")
    assert report.status_code == 200 and "<svg" in report.text and "rngd" in report.text
    assert "script-src" not in report.headers["content-security-policy"]
    corp = _sign_in(app, center["corp"])  # another tenant: not its results
    assert corp.get(f"/console/results/{ids[0]}").status_code == 404
    assert f"job {ids[0]}" not in corp.get("/console/results").text


def test_the_csv_export_does_not_hand_a_spreadsheet_a_formula(app, center) -> None:
    _api(app, ADMIN).post(
        "/api/usage", json={"tenant": "lab", "kind": "tokens", "tokens_in": 5, "ref": "=1+2"}
    )
    csv_text = _sign_in(app, center["lab"]).get("/console/usage.csv").text
    assert ",'=1+2," in csv_text and ",=1+2," not in csv_text


def test_a_tenant_deploys_by_form_within_its_quota_and_no_one_else_sees_it(app, center) -> None:
    lab, corp = _sign_in(app, center["lab"]), _sign_in(app, center["corp"])
    page = lab.get("/console/deployments")
    assert page.status_code == 200 and 'id="deploy-form"' in page.text
    form = {"name": "chat", "model": "llama-3.1-8b", "device_type": "h100", "tp": "1"}
    assert lab.post("/console/deployments", data=form).status_code == 403  # no CSRF token
    made = lab.post("/console/deployments", data={**form, "csrf": _csrf(page.text)})
    assert made.status_code == 303, made.text
    dep_path = made.headers["location"]
    assert re.fullmatch(r"/console/deployments/\d+", dep_path)
    shown = lab.get(dep_path)
    assert shown.status_code == 200 and "llama-3.1-8b" in shown.text and "Engine logs" in shown.text
    api = _api(app, center["lab"]).get("/api/deployments").json()
    assert [d["name"] for d in api] == ["chat"]
    # beyond the quota (2 cards): the API's refusal, shown above the form; nothing is created
    big = {**form, "name": "big", "tp": "4", "csrf": _csrf(page.text)}
    refused = lab.post("/console/deployments", data=big)
    assert refused.status_code >= 400 and 'id="deploy-error"' in refused.text, refused.text
    assert 'value="big"' in refused.text  # the form keeps what was typed
    assert [d["name"] for d in _api(app, center["lab"]).get("/api/deployments").json()] == ["chat"]
    bad = lab.post(
        "/console/deployments", data={**form, "name": "x", "tp": "0", "csrf": _csrf(page.text)}
    )
    assert bad.status_code == 422 and "tp" in bad.text
    # another tenant: not in its list, and 404 by the URL
    assert "chat" not in corp.get("/console/deployments").text.split('id="deploy-form"')[0]
    assert corp.get(dep_path).status_code == 404


def test_a_tenant_scales_bounds_and_deletes_its_deployment_by_form(app, center) -> None:
    lab, corp = _sign_in(app, center["lab"]), _sign_in(app, center["corp"])
    page = lab.get("/console/deployments")
    form = {"name": "chat", "model": "llama-3.1-8b", "device_type": "h100", "tp": "1"}
    dep_path = lab.post("/console/deployments", data={**form, "csrf": _csrf(page.text)}).headers[
        "location"
    ]
    dep_id = int(dep_path.rsplit("/", 1)[1])
    api = _api(app, center["lab"])
    shown = lab.get(dep_path)
    for form_id in ("scale-form", "autoscale-form", "delete-form"):
        assert f'id="{form_id}"' in shown.text
    csrf = _csrf(shown.text)
    # no CSRF token: refused, nothing changes
    assert lab.post(f"{dep_path}/scale", data={"replicas": "2"}).status_code == 403
    assert api.get(f"/api/deployments/{dep_id}").json()["replicas"] == 1
    scaled = lab.post(f"{dep_path}/scale", data={"replicas": "2", "csrf": csrf})
    assert scaled.status_code == 303 and scaled.headers["location"] == dep_path
    assert api.get(f"/api/deployments/{dep_id}").json()["replicas"] == 2
    # bounds beyond the quota (2 h100 cards): the API's 409, shown on the page, typed value kept
    over = {"min_replicas": "0", "max_replicas": "3", "idle_to_zero_s": "", "csrf": csrf}
    refused = lab.post(f"{dep_path}/autoscale", data=over)
    assert refused.status_code == 409 and 'id="dep-error"' in refused.text, refused.text
    assert 'name="max_replicas" type="number" min="1" max="256" size="4" value="3"' in refused.text
    assert api.get(f"/api/deployments/{dep_id}").json()["max_replicas"] is None
    bad = lab.post(f"{dep_path}/autoscale", data={**over, "min_replicas": "2", "max_replicas": "1"})
    assert bad.status_code == 400 and "above max_replicas" in bad.text
    ok = {**over, "max_replicas": "2", "idle_to_zero_s": "60"}
    assert lab.post(f"{dep_path}/autoscale", data=ok).status_code == 303
    got = api.get(f"/api/deployments/{dep_id}").json()
    assert (got["min_replicas"], got["max_replicas"], got["idle_to_zero_s"]) == (0, 2, 60.0)
    assert "0 · 2 · 60 s" in lab.get(dep_path).text
    # all three empty: a fixed count again
    none = {"min_replicas": "", "max_replicas": "", "idle_to_zero_s": "", "csrf": csrf}
    assert lab.post(f"{dep_path}/autoscale", data=none).status_code == 303
    got = api.get(f"/api/deployments/{dep_id}").json()
    assert (got["min_replicas"], got["max_replicas"]) == (None, None)
    # another tenant cannot scale or delete it, also by posting to its URL with its own token
    corp_csrf = _csrf(corp.get("/console/deployments").text)
    assert (
        corp.post(f"{dep_path}/scale", data={"replicas": "0", "csrf": corp_csrf}).status_code == 404
    )
    assert corp.post(f"{dep_path}/delete", data={"csrf": corp_csrf}).status_code == 404
    assert api.get(f"/api/deployments/{dep_id}").json()["replicas"] == 2
    gone = lab.post(f"{dep_path}/delete", data={"csrf": csrf})
    assert gone.status_code == 303 and gone.headers["location"] == "/console/deployments"
    assert api.get(f"/api/deployments/{dep_id}").status_code == 404
    assert lab.get(dep_path).status_code == 404


def test_the_operator_has_a_tenants_page_and_tenants_do_not(app, center) -> None:
    admin, lab = _sign_in(app, ADMIN), _sign_in(app, center["lab"])
    page = admin.get("/console/tenants")
    assert page.status_code == 200
    table = page.text.split('id="tenant-table"')[1]
    assert "lab" in table and "corp" in table
    assert re.search(r"h100\w* 2 / 0", table), table  # nominal / in use
    assert 'href="/console/quotas?tenant=lab#q-tenant"' in table
    quotas = admin.get("/console/quotas?tenant=corp")
    assert "<option selected>corp</option>" in quotas.text
    assert lab.get("/console/tenants").status_code == 403
    assert "/console/tenants" not in lab.get("/console/usage").text


def test_the_fleet_grid_shows_the_npu_share_and_power_against_the_cards_tdp(app, center) -> None:
    from npucenter.catalog import default_catalog

    assert (
        _api(app, ADMIN)
        .post("/api/servers", json={"name": "n1", "device_type": "rngd", "num_cards": 8})
        .is_success
    )
    admin = _sign_in(app, ADMIN)
    page = admin.get("/console/fleet").text
    assert "NPU share: 8 of 12 cards are NPUs (67 %); 0 of the 0 cards at work" in page
    tdp = default_catalog().device("h100").tdp_w
    assert tdp  # the catalog's sourced figure; the page multiplies it by the server's 4 cards
    assert f"TDP {4 * tdp:,.0f} W" in page
    assert "no live gateway in this process" in page  # no gateway here: no power figure invented


def _simulate_result(tmp_path: Path) -> dict[str, object]:
    """What `python -m npucenter.jobs.simulate` writes for a small run (run here in process)."""
    import json
    import os

    from npucenter.fleet.model import default_fleet_mapping
    from npucenter.jobs import simulate
    from npucenter.jobs.twin import twin_spec

    spec = twin_spec("simulate", {"fleet": default_fleet_mapping(), "num_requests": 200})
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    os.environ["NPUCENTER_RESULT_PATH"] = str(tmp_path / "result.json")
    try:
        assert simulate.main(["--spec", str(tmp_path / "spec.json")]) == 0
    finally:
        del os.environ["NPUCENTER_RESULT_PATH"]
    return json.loads((tmp_path / "result.json").read_text())


def test_the_twin_page_submits_a_simulation_job_and_shows_its_report(app, center, tmp_path) -> None:
    lab, corp = _sign_in(app, center["lab"]), _sign_in(app, center["corp"])
    page = lab.get("/console/twin")
    assert page.status_code == 200 and 'id="simulate-form"' in page.text
    assert 'value="center"' in page.text  # this center's own fleet is offered
    form = {"kind": "simulate", "fleet": "center", "trace": "conv", "num_requests": "200"}
    form |= {"policy": "least-outstanding-tokens", "device_type": "h100"}
    assert lab.post("/console/twin", data=form).status_code == 403  # no CSRF token
    made = lab.post("/console/twin", data={**form, "csrf": _csrf(page.text)})
    assert made.status_code == 303, made.text
    run_path = made.headers["location"]
    job = _api(app, center["lab"]).get(f"/api/jobs/{run_path.rsplit('/', 1)[1]}").json()
    assert job["kind"] == "simulate" and job["num_cards"] == 0  # the host's CPU by default
    assert job["state"] == "admitted" and not job.get("card_indexes")
    quotas = _api(app, center["lab"]).get("/api/quotas").json()
    assert sum(q["used_cards"] for q in quotas) == 0  # the simulation holds no card
    assert "npucenter.jobs.simulate" in " ".join(job["command"])  # the center's program
    running = lab.get(run_path)
    assert running.status_code == 200 and 'http-equiv="refresh"' in running.text
    # a path outside the offered fleets, or a fleet by path, is refused; nothing is submitted
    bad = lab.post(
        "/console/twin", data={**form, "fleet": "../../etc/passwd", "csrf": _csrf(page.text)}
    )
    assert bad.status_code == 404 and 'id="twin-error"' in bad.text
    huge = lab.post(
        "/console/twin", data={**form, "num_requests": "10000000", "csrf": _csrf(page.text)}
    )
    assert huge.status_code == 422 and "num_requests" in huge.text
    assert len(_api(app, center["lab"]).get("/api/jobs").json()) == 1
    # the result the program writes, shown as the report with sim.report's charts
    admin = _api(app, ADMIN)
    job_id = job["id"]
    admin.post(f"/api/jobs/{job_id}/state", json={"state": "running"})
    assert admin.put(f"/api/jobs/{job_id}/result", json=_simulate_result(tmp_path)).is_success
    admin.post(f"/api/jobs/{job_id}/state", json={"state": "succeeded"})
    done = lab.get(run_path).text
    assert 'http-equiv="refresh"' not in done
    assert done.count("<svg") >= 3 and "Latency CDF" in done and 'id="twin-slo"' in done
    # another tenant: not listed, 404 by URL; a job that is not a twin job is not a twin page
    assert run_path not in corp.get("/console/twin").text
    assert corp.get(run_path).status_code == 404
    other = _api(app, center["corp"]).post(
        "/api/jobs",
        json={"name": "b", "kind": "benchmark", "device_type": "h100", "command": ["true"]},
    )
    assert (
        _sign_in(app, center["corp"]).get(f"/console/twin/{other.json()['id']}").status_code == 404
    )


def test_a_twin_job_without_a_spec_or_with_a_bad_one_is_refused_by_the_api(app, center) -> None:
    api = _api(app, center["lab"])
    base = {"name": "s", "kind": "simulate", "device_type": "h100"}
    assert api.post("/api/jobs", json={**base, "command": ["echo"]}).status_code == 400
    fleet = {"servers": [{"device": "h100", "count": 1, "cards_per_server": 8}], "services": []}
    bad = api.post("/api/jobs", json={**base, "spec": {"fleet": fleet}})
    assert bad.status_code == 422, bad.text
    typo = api.post("/api/jobs", json={**base, "spec": {"fleet": {}, "tracee": "conv"}})
    assert typo.status_code == 422 and "tracee" in typo.text
    assert api.get("/api/jobs").json() == []


_TINY_PLAN = {
    "name": "tiny",
    "objective": "cost",
    "power": {"cap_w": 50000, "pue": 1.3, "price_usd_per_kwh": 0.13, "price_source": "test"},
    "devices": [
        {
            "device": d,
            "cards_per_server": 8,
            "server_cost_usd_per_hour": cost,
            "cost_source": "test",
            "max_servers": 10,
        }
        for d, cost in (("furiosa_rngd", 16.0), ("nvidia_h100_sxm", 39.0))
    ],
    "services": [
        {
            "name": "code",
            "model": "llama-3.1-8b",
            "precision": "fp8",
            "tp": [1],
            "traffic": {"trace": "code", "rate_scale": 10},
            "slo": {"preset": "mlperf-llama-3.1-8b", "attainment_fraction": 0.9},
        }
    ],
}


def test_a_plan_job_from_the_form_and_its_report(app, center, tmp_path) -> None:
    import json
    import os

    from npucenter.jobs import plan
    from npucenter.jobs.twin import twin_spec

    lab = _sign_in(app, center["lab"])
    page = lab.get("/console/twin")
    key = re.search(r'<select id="t-plan" name="plan"><option value="([^"]+)"', page.text)
    assert key, "no example plan offered"
    form = {"kind": "plan", "plan": key.group(1), "device_type": "h100", "csrf": _csrf(page.text)}
    made = lab.post("/console/twin", data=form)
    assert made.status_code == 303, made.text
    job = _api(app, center["lab"]).get(f"/api/jobs/{made.headers['location'].rsplit('/', 1)[1]}")
    assert job.json()["kind"] == "plan"
    # the planner's result for a small plan (run here in process), shown as the plan's report
    (tmp_path / "spec.json").write_text(json.dumps(twin_spec("plan", {"plan": _TINY_PLAN})))
    os.environ["NPUCENTER_RESULT_PATH"] = str(tmp_path / "result.json")
    try:
        assert plan.main(["--spec", str(tmp_path / "spec.json")]) == 0
    finally:
        del os.environ["NPUCENTER_RESULT_PATH"]
    doc = json.loads((tmp_path / "result.json").read_text())
    admin = _api(app, ADMIN)
    admin.post(f"/api/jobs/{job.json()['id']}/state", json={"state": "running"})
    assert admin.put(f"/api/jobs/{job.json()['id']}/result", json=doc).is_success
    shown = lab.get(made.headers["location"]).text
    table = shown.split('id="twin-plan"')[1].split("</table>")[0]
    for name in ("plan", "all-gpu", "all-npu", "80-20"):
        assert f'<td class="text">{name}' in table, name
    assert "Cost per hour" in shown and "<svg" in shown.split('id="twin-charts"')[1]


@pytest.mark.parametrize(
    "doc",
    [
        {"x": "<b>not a report</b>"},
        {"summary": {"ttft_s": "<b>", "tpot_s": {}, "timeline": {}}, "cdf": {}},
        {"baselines": {"all-gpu": "<b>"}},
    ],
)
def test_a_twin_result_the_program_did_not_write_is_shown_escaped_not_drawn(
    app, center, doc
) -> None:
    """A tenant may upload any result to its own job: the page shows it as JSON, never HTML."""
    lab = _sign_in(app, center["lab"])
    page = lab.get("/console/twin")
    form = {"kind": "simulate", "fleet": "center", "device_type": "h100"}
    made = lab.post("/console/twin", data={**form, "csrf": _csrf(page.text)})
    job_id = made.headers["location"].rsplit("/", 1)[1]
    assert _api(app, center["lab"]).put(f"/api/jobs/{job_id}/result", json=doc).is_success
    shown = lab.get(made.headers["location"])
    assert shown.status_code == 200 and 'id="job-result"' in shown.text
    assert "<b>" not in shown.text
