"""kill -9 of `npucenter up` under streaming load, then a restart: the ledger is what clients got.

Every stream a client received to ``[DONE]`` has exactly one ledger row, with the output tokens
the stream's own usage chunk reported (0 lost, 0 doubled); no request id has two rows.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest
from _center import start_up, stop

pytestmark = pytest.mark.e2e

ADMIN = "e2e-crash-admin-key-0123456789"
FLEET = """\
name: crash
servers:
  - {device: rngd, count: 1, cards_per_server: 8}
services:
  - {model: llama-3.1-8b, device: rngd, tp: 1, replicas_per_server: 2}
"""
NUM_CLIENTS = 12
LOAD_S = 4.0


def _stream(url: str, key: str, max_tokens: int) -> tuple[str, int | None]:
    """One streamed completion: (request id, completion tokens of its usage chunk when it got
    to [DONE], else None)."""
    body = {
        "model": "llama-3.1-8b",
        "messages": [{"role": "user", "content": "count for me"}],
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    headers = {"Authorization": f"Bearer {key}"}
    request_id, tokens, done = "", None, False
    with httpx.stream(
        "POST", f"{url}/v1/chat/completions", json=body, headers=headers, timeout=30
    ) as resp:
        request_id = resp.headers.get("x-request-id", "")
        if resp.status_code != 200:
            return request_id, None
        for line in resp.iter_lines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: {"):
                usage = json.loads(line[6:]).get("usage")
                if usage:
                    tokens = int(usage["completion_tokens"])
    return request_id, tokens if done else None


def _wait_serving(url: str, key: str) -> None:
    deadline = time.monotonic() + 90
    while True:
        try:
            if _stream(url, key, 2)[1] is not None:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the fleet never served"
        time.sleep(0.5)


def test_kill_9_under_streaming_load_loses_and_doubles_nothing(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET)
    data = tmp_path / "data"
    env = {**os.environ, "NPUCENTER_ADMIN_KEY": ADMIN}
    env.pop("NPUCENTER_VIRTUAL_FLEET", None)
    args = ("--fleet", str(fleet), "--log-level", "warning")
    up = start_up(data, env, *args, log_path=tmp_path / "up-1.log")
    try:
        admin = httpx.Client(base_url=up.url, headers={"Authorization": f"Bearer {ADMIN}"})
        assert admin.post("/api/tenants", json={"name": "acme", "kind": "company"}).is_success
        key = admin.post("/api/keys", json={"tenant": "acme"}).json()["key"]
        _wait_serving(up.url, key)
        completed: dict[str, int] = {}
        lock = threading.Lock()
        stop_at = time.monotonic() + 60

        def client(seed: int) -> None:
            n = 0
            while time.monotonic() < stop_at:
                n += 1
                try:
                    request_id, tokens = _stream(up.url, key, 8 + (seed * 7 + n * 13) % 40)
                except httpx.HTTPError:
                    return  # the center is gone
                if tokens is not None:
                    with lock:
                        completed[request_id] = tokens

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(12)]
        for t in threads:
            t.start()
        time.sleep(LOAD_S)
        with lock:
            before_kill = len(completed)
        up.proc.send_signal(signal.SIGKILL)  # mid-stream: clients are reading right now
        up.proc.wait(timeout=10)
        for t in threads:
            t.join(timeout=30)
        assert before_kill >= 10, "too little load to mean anything"
    finally:
        stop(up.proc, sig=signal.SIGKILL)
    again = start_up(data, env, *args, log_path=tmp_path / "up-2.log")  # replays the journal
    try:
        _wait_serving(again.url, key)  # replicas back with no manual action
        con = sqlite3.connect(data / "npucenter.db")
        rows = con.execute(
            "SELECT request_id, tokens_out FROM usage_ledger WHERE kind = 'tokens'"
        ).fetchall()
        con.close()
    finally:
        stop(again.proc, sig=signal.SIGKILL)
    ledger = {rid: out for rid, out in rows}
    assert len(ledger) == len(rows)  # no request id twice
    lost = [rid for rid in completed if rid not in ledger]
    wrong = {
        rid: (ledger[rid], n) for rid, n in completed.items() if rid in ledger and ledger[rid] != n
    }
    assert (lost, wrong) == ([], {}), f"of {len(completed)} completed streams"
