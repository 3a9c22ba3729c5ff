"""Overload is answered at once: 503 + Retry-After when the queue or the gateway is full."""

from __future__ import annotations

import threading
import time

import httpx

from npucenter.wire.fake import FakeScript

MSG = [{"role": "user", "content": "hi"}]
AUTH = {"authorization": "Bearer sk-acme"}


def _post_in_background(url: str, results: list[int]) -> threading.Thread:
    def go() -> None:
        body = {"model": "m", "messages": MSG, "max_tokens": 40}
        results.append(httpx.post(url, json=body, headers=AUTH, timeout=20).status_code)

    thread = threading.Thread(target=go)
    thread.start()
    return thread


def _wait_for(cond, timeout_s: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cond()


def test_a_full_fair_queue_answers_503_with_retry_after_at_once(make_rig) -> None:  # type: ignore[no-untyped-def]
    rig = make_rig([FakeScript(itl_s=0.05)], max_inflight=1, max_queued=1, max_wait_s=20)
    url = f"{rig.url}/v1/chat/completions"
    results: list[int] = []
    running = _post_in_background(url, results)  # takes the one slot for ~2 s
    _wait_for(lambda: rig.gateway.pool.replicas("m")[0].inflight == 1)
    queued = _post_in_background(url, results)  # fills the queue
    _wait_for(lambda: rig.gateway.dispatcher.queued("m") == 1)
    resp = httpx.post(url, json={"model": "m", "messages": MSG}, headers=AUTH, timeout=20)
    assert resp.status_code == 503
    assert int(resp.headers["retry-after"]) >= 1
    assert results == []  # refused now: before the request in service (~2 s) let a slot go
    running.join()
    queued.join()
    assert results == [200, 200]  # the ones taken in were served


def test_requests_beyond_the_gateway_bound_are_shed_before_the_key_is_read(make_rig) -> None:  # type: ignore[no-untyped-def]
    rig = make_rig([FakeScript(itl_s=0.05)], max_inflight_requests=1)
    url = f"{rig.url}/v1/chat/completions"
    results: list[int] = []
    running = _post_in_background(url, results)
    _wait_for(lambda: rig.gateway.door.inflight == 1)
    resp = httpx.post(url, json={"model": "m", "messages": MSG}, headers={}, timeout=20)
    assert resp.status_code == 503  # not 401: shed before the key is looked at
    assert resp.json()["error"]["type"] == "capacity_unavailable" or resp.status_code == 503
    assert int(resp.headers["retry-after"]) >= 1
    assert results == []  # shed now: before the request in service (~2 s) ended
    assert rig.gateway.door.shed == 1
    running.join()
    assert results == [200]
    assert rig.gateway.door.inflight == 0


def test_a_long_expected_wait_is_refused_now(make_rig) -> None:  # type: ignore[no-untyped-def]
    rig = make_rig([FakeScript(itl_s=0.05)], max_inflight=1, max_expected_wait_s=0.5)
    gw = rig.gateway
    gw.dispatcher.waits.served("m", 0.0)
    gw.dispatcher.waits.served("m", 2.0)  # waiters served every 2 s lately
    url = f"{rig.url}/v1/chat/completions"
    results: list[int] = []
    running = _post_in_background(url, results)
    _wait_for(lambda: gw.pool.replicas("m")[0].inflight == 1)
    resp = httpx.post(url, json={"model": "m", "messages": MSG}, headers=AUTH, timeout=20)
    assert resp.status_code == 503 and results == []  # now: the one in service still runs
    assert int(resp.headers["retry-after"]) >= 1
    running.join()
    assert results == [200]


def test_when_every_queue_is_full_for_its_bound_the_door_refuses_before_the_key(make_rig) -> None:  # type: ignore[no-untyped-def]
    rig = make_rig([FakeScript(itl_s=0.05)], max_inflight=1, max_expected_wait_s=0.5)
    gw = rig.gateway
    url = f"{rig.url}/v1/chat/completions"
    results: list[int] = []
    running = _post_in_background(url, results)  # takes the one slot for ~2 s
    _wait_for(lambda: gw.pool.replicas("m")[0].inflight == 1)
    queued = _post_in_background(url, results)  # no service rate known yet: it waits
    _wait_for(lambda: gw.dispatcher.queued("m") == 1)
    gw.dispatcher.waits.served("m", 0.0)
    gw.dispatcher.waits.served("m", 2.0)  # waiters served ~1 s apart lately: the next waits ~2 s
    resp = httpx.post(url, json={"model": "m", "messages": MSG}, headers={}, timeout=20)
    assert resp.status_code == 503  # not 401: refused at the door, before the key is read
    assert "x-request-id" not in resp.headers  # no request, no ledger row
    assert int(resp.headers["retry-after"]) >= 1 and results == []  # now, not after a wait
    assert gw.door.shed == 1
    running.join()
    queued.join()
    assert results == [200, 200]
    _wait_for(lambda: len(rig.ledger.rows()) >= 2)
    time.sleep(0.5)  # the ticker writes rows every 0.2 s: a third would be there by now
    assert [r.status for r in rig.ledger.rows()] == ["ok", "ok"]  # the two served only
    gw.dispatcher.waits.served("m", 10.0, measure=False)
    assert gw.dispatcher.saturated() is None  # the queue is empty again: nothing refused
