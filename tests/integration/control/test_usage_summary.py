"""``GET /api/usage/summary``: the ledger summed by the database (SQLite and PostgreSQL).

The totals are checked against the same rows read one by one from ``GET /api/usage`` and summed
here, per tenant, kind, model (a gateway row's service: a model or an adapter) and time bucket.
"""

from __future__ import annotations

import math
from collections import defaultdict

import pytest
from fastapi.testclient import TestClient

ROWS = [  # (tenant, kind, ref, tokens_in, tokens_out, device_seconds, energy_j, cost_usd, dt_s)
    (
        "lab",
        "tokens",
        "/v1/chat/completions llama-3.1-8b 200 r1 k1 rep",
        100,
        20,
        0.5,
        10.0,
        0.01,
        0,
    ),
    ("lab", "tokens", "/v1/chat/completions llama-3.1-8b 200 r2 k1 rep", 50, 5, 0.2, 4.0, None, 30),
    ("lab", "tokens", "/v1/completions lab-adapter 200 r3 k1 rep", 7, 3, 0.1, 1.0, 0.002, 3_700),
    ("lab", "job", "job:1 checkpoint", 0, 0, 3600.0, 7.2e5, 2.0, 3_900),
    (
        "corp",
        "tokens",
        "/v1/chat/completions qwen-2.5-7b 200 r4 k2 rep",
        10,
        1,
        0.3,
        2.0,
        0.5,
        7_300,
    ),
    ("corp", "tokens", "oddref", 1, 1, 0.0, 0.0, None, 7_400),
]
FIELDS = ("tokens_in", "tokens_out", "device_seconds", "energy_j", "num_entries")


def _model(kind: str, ref: str, device_type: str | None) -> str:
    if kind != "tokens":
        return device_type or "—"
    parts = ref.split()
    return parts[1] if len(parts) > 1 else "—"


@pytest.fixture
def ledger(admin, clock) -> list[dict]:
    for name in ("lab", "corp"):
        assert admin.post("/api/tenants", json={"name": name, "kind": "university"}).is_success
    t0 = clock.now_s()
    for tenant, kind, ref, tin, tout, dev_s, energy, cost, dt in ROWS:
        clock.advance(t0 + dt - clock.now_s())
        body = {
            "tenant": tenant,
            "kind": kind,
            "ref": ref,
            "tokens_in": tin,
            "tokens_out": tout,
            "device_seconds": dev_s,
            "energy_j": energy,
            "cost_usd": cost,
            "device_type": "h100" if kind == "job" else None,
        }
        assert admin.post("/api/usage", json=body).status_code == 201
    rows = admin.get("/api/usage").json()
    assert len(rows) == len(ROWS)
    return rows


def _expected(rows: list[dict], keys, bucket_s: float | None = None) -> dict[tuple, dict]:
    out: dict[tuple, dict] = defaultdict(lambda: defaultdict(float))
    for r in rows:
        values = {
            "tenant": r["tenant"],
            "kind": r["kind"],
            "model": _model(r["kind"], r["ref"], r["device_type"]),
        }
        key = tuple(values[k] for k in keys)
        if bucket_s is not None:
            key += (math.floor(r["at_s"] / bucket_s) * bucket_s,)
        t = out[key]
        for f in FIELDS[:-1]:
            t[f] += r[f]
        t["num_entries"] += 1
        t["cost_usd"] += r["cost_usd"] or 0.0
    return out


@pytest.mark.parametrize("by", ["tenant,kind", "tenant,kind,model", "model", "kind", ""])
def test_the_summary_is_the_ledger_summed(admin, ledger, by) -> None:
    keys = [k for k in by.split(",") if k]
    got = admin.get("/api/usage/summary", params={"by": by})
    assert got.status_code == 200, got.text
    want = _expected(ledger, keys)
    assert len(got.json()) == len(want)
    for row in got.json():
        key = tuple(row[k] for k in keys)
        for f in FIELDS:
            assert row[f] == pytest.approx(want[key][f]), (key, f)
        assert (row["cost_usd"] or 0.0) == pytest.approx(want[key]["cost_usd"])
        for absent in {"tenant", "kind", "model"} - set(keys):
            assert row[absent] is None


def test_models_and_adapters_are_told_apart(admin, ledger) -> None:
    rows = admin.get("/api/usage/summary", params={"by": "tenant,model"}).json()
    assert {(r["tenant"], r["model"]) for r in rows} == {
        ("corp", "qwen-2.5-7b"),
        ("corp", "—"),  # a ref without a service word
        ("lab", "llama-3.1-8b"),
        ("lab", "lab-adapter"),
        ("lab", "h100"),  # a card-time row: its device type
    }
    llama = next(r for r in rows if r["model"] == "llama-3.1-8b")
    assert (llama["tokens_in"], llama["tokens_out"], llama["num_entries"]) == (150, 25, 2)
    assert llama["cost_usd"] == pytest.approx(0.01)  # the unpriced row adds nothing
    assert llama["first_at_s"] < llama["last_at_s"]


@pytest.mark.parametrize("bucket_s", [3600.0, 60.0])
def test_time_buckets_are_epoch_aligned_and_sum_to_the_total(admin, ledger, bucket_s) -> None:
    got = admin.get(
        "/api/usage/summary", params={"by": "model", "bucket_s": bucket_s, "kind": "tokens"}
    ).json()
    want = _expected([r for r in ledger if r["kind"] == "tokens"], ["model"], bucket_s)
    assert {(r["model"], r["bucket_start_s"]) for r in got} == set(want)
    for r in got:
        assert r["bucket_start_s"] <= r["first_at_s"] <= r["last_at_s"]
        assert r["last_at_s"] < r["bucket_start_s"] + bucket_s
        assert r["tokens_in"] == want[(r["model"], r["bucket_start_s"])]["tokens_in"]
    assert sum(r["tokens_in"] for r in got) == sum(r["tokens_in"] for r in ledger)


def test_a_tenant_sums_only_its_own_rows(admin, ledger) -> None:
    key = admin.post("/api/keys", json={"tenant": "corp", "name": "k"}).json()["key"]
    corp = TestClient(admin.app, headers={"Authorization": f"Bearer {key}"})
    rows = corp.get("/api/usage/summary", params={"by": "tenant,model"}).json()
    assert {r["tenant"] for r in rows} == {"corp"}
    assert sum(r["num_entries"] for r in rows) == 2
    assert corp.get("/api/usage/summary", params={"tenant": "lab"}).status_code == 404


def test_since_and_kind_filter_before_summing(admin, ledger) -> None:
    since = min(r["at_s"] for r in ledger) + 3_600
    rows = admin.get("/api/usage/summary", params={"by": "", "since_s": since}).json()
    assert rows[0]["num_entries"] == sum(1 for r in ledger if r["at_s"] >= since)
    jobs = admin.get("/api/usage/summary", params={"by": "kind", "kind": "job"}).json()
    assert [r["kind"] for r in jobs] == ["job"]


def test_an_empty_ledger_has_no_groups_and_bad_groupings_are_refused(admin) -> None:
    assert admin.get("/api/usage/summary").json() == []
    assert admin.get("/api/usage/summary", params={"by": ""}).json() == []
    bad = admin.get("/api/usage/summary", params={"by": "tenant,colour"})
    assert bad.status_code == 422 and "colour" in bad.text
    assert admin.get("/api/usage/summary", params={"bucket_s": 0}).status_code == 422


def test_the_cli_summary_groups_and_buckets(ledger, anonymous, admin_key, monkeypatch) -> None:
    import json

    from typer.testing import CliRunner

    from npucenter.cli import calls, control
    from npucenter.cli.client import Client
    from npucenter.cli.main import app as cli_app

    monkeypatch.setattr(control.console, "width", 200)
    monkeypatch.setattr(
        calls, "_api", lambda: Client("http://testserver", admin_key, http=anonymous)
    )
    runner = CliRunner()
    args = ["usage", "summary", "--by", "tenant,model", "--bucket-s", "3600"]
    doc = runner.invoke(cli_app, [*args, "--json"])
    assert doc.exit_code == 0, doc.output
    rows = json.loads(doc.stdout)
    assert {r["model"] for r in rows} >= {"llama-3.1-8b", "lab-adapter", "h100"}
    assert all(r["bucket_start_s"] % 3600 == 0 for r in rows)
    table = runner.invoke(cli_app, args)
    assert (
        table.exit_code == 0 and "lab-adapter" in table.stdout and "bucket_start_s" in table.stdout
    )
