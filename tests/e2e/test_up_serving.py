"""`npucenter up` as a user runs it: gateway at /v1 on the same port, a virtual fleet, the
dashboard, metering into the ledger, and no engine process left behind after Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from _center import running_up

pytestmark = pytest.mark.e2e

ADMIN = "e2e-admin-key-0123456789abcdef"
FLEET = """\
name: e2e
servers:
  - {device: rngd, count: 1, cards_per_server: 8}
  - {device: h100, count: 1, cards_per_server: 8}
services:
  - {model: llama-3.1-8b, device: rngd, tp: 1, replicas_per_server: 1}
  - {model: llama-3.1-8b, device: h100, tp: 1, replicas_per_server: 1}
tariff_usd_per_device_hour: {rngd: 1.0, h100: 2.0}
"""


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [int(p) for p in out.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat")
    return not (state.exists() and state.read_text().split()[2] == "Z")


@pytest.fixture
def center(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET)
    env = {**os.environ, "NPUCENTER_ADMIN_KEY": ADMIN}
    env.pop("NPUCENTER_VIRTUAL_FLEET", None)
    args = ("--fleet", str(fleet), "--log-level", "warning")
    with running_up(tmp_path / "data", env, *args, sig=signal.SIGKILL) as up:
        yield up.url, up.proc


def test_up_serves_the_openai_api_on_a_virtual_fleet(center) -> None:  # type: ignore[no-untyped-def]
    url, proc = center
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=ADMIN, max_retries=0, timeout=30)
    deadline = time.monotonic() + 60
    while True:  # replicas start in the background: 503 + Retry-After until they are up
        try:
            out = client.chat.completions.create(
                model="llama-3.1-8b",
                messages=[{"role": "user", "content": "Hello, NPU."}],
                max_tokens=8,
            )
            break
        except openai.InternalServerError as exc:
            assert exc.status_code == 503 and "retry-after" in exc.response.headers
            assert time.monotonic() < deadline
            time.sleep(0.5)
    assert out.usage is not None and out.usage.completion_tokens == 8
    assert [m.id for m in client.models.list()] == ["llama-3.1-8b"]
    chunks = list(
        client.chat.completions.create(
            model="llama-3.1-8b",
            messages=[{"role": "user", "content": "Stream, please."}],
            max_tokens=5,
            stream=True,
        )
    )
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) == 5

    time.sleep(0.6)  # ledger flush
    rows = [
        r
        for r in httpx.get(f"{url}/api/usage", headers={"authorization": f"Bearer {ADMIN}"}).json()
        if r["kind"] == "tokens"
    ]
    assert sum(r["tokens_out"] for r in rows) == 8 + 5
    served = [r for r in rows if r["ref"].startswith("/v1/chat/completions llama-3.1-8b ok ")]
    assert len(served) == 2 and all(r["energy_j"] > 0 and r["device_seconds"] > 0 for r in served)
    page = httpx.get(f"{url}/")
    assert page.status_code == 200 and "rngd-0-r0" in page.text and "h100-0-r0" in page.text
    metrics = httpx.get(f"{url}/metrics").text
    assert 'npucenter_gateway_requests_total{endpoint="/v1/chat/completions"' in metrics

    engines = _children(proc.pid)
    assert len(engines) >= 2
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    assert proc.wait(timeout=30) in (0, 130)
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in engines) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in engines), "engine processes outlived npucenter up"
