"""A model of a deployment at zero replicas: requests are held while one starts, then served;
503 + Retry-After when none comes in time; still 404 for a model nobody serves."""

from __future__ import annotations

import asyncio

import httpx

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}


def _post(url: str, body: dict[str, object] = BODY) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        headers={"authorization": "Bearer sk-acme"},
        json=body,
        timeout=20,
    )


def test_a_request_at_zero_replicas_is_held_until_one_is_up(make_rig) -> None:  # type: ignore[no-untyped-def]
    rig = make_rig()
    gw = rig.gateway
    endpoints = [r.endpoint for r in gw.pool.replicas("m")]
    gw.pool.set([])
    gw.standby_models = {"m"}
    woken = []

    def cold_start() -> None:  # what the autoscaler does: a replica comes up a bit later
        woken.append(1)
        asyncio.get_running_loop().call_later(0.4, gw.pool.set, endpoints)

    gw.on_cold_start = cold_start
    resp = _post(rig.url)
    assert resp.status_code == 200, resp.text
    assert resp.json()["usage"]["completion_tokens"] == 3
    assert woken == [1] and gw.held_for_replica["m"] == 0


def test_no_replica_in_time_is_a_503_with_retry_after(make_rig) -> None:  # type: ignore[no-untyped-def]
    rig = make_rig()
    gw = rig.gateway
    gw.pool.set([])
    gw.standby_models = {"m"}
    gw.cold_start_hold_s = 0.3
    resp = _post(rig.url)
    assert resp.status_code == 503 and "retry-after" in resp.headers
    assert gw.held_for_replica["m"] == 0
    models = httpx.get(f"{rig.url}/v1/models", headers={"authorization": "Bearer sk-acme"})
    assert [m["id"] for m in models.json()["data"]] == ["m"]  # known at zero, not 404
    assert _post(rig.url, {**BODY, "model": "nobody"}).status_code == 404
