"""Deployments that serve: `npucenter up` on a tiny fleet, a tenant deploys a second model with
`npucenter deploy create`, calls it with the openai client (by model id and by deployment name),
scales it to 0 and back, deletes it (gone from /v1/models); a second start on the same data
directory registers nothing twice and serves the fleet's model again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from _center import start_up
from _center import stop as stop_process

from npucenter.executors import free_port

pytestmark = pytest.mark.e2e

ADMIN = "e2e-deploy-admin-key-0123456789"
FLEET = """\
name: deploy-e2e
servers:
  - {device: rngd, count: 1, cards_per_server: 8}
  - {device: h100, count: 1, cards_per_server: 8}
services:
  - {model: llama-3.1-8b, device: rngd, tp: 1, replicas_per_server: 1}
"""
DEADLINE_S = 60.0


class Center:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "NPUCENTER_ADMIN_KEY": ADMIN}
        for name in ("NPUCENTER_VIRTUAL_FLEET", "NPUCENTER_FLEET", "NPUCENTER_TARIFF"):
            env.pop(name, None)
        args = ("--fleet", str(self.tmp / "fleet.yaml"), "--log-level", "warning")
        self.proc = start_up(self.tmp / "data", env, *args, port=self.port).proc

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, sig=signal.SIGINT, timeout_s=30)

    def cli(self, *args: str, key: str = ADMIN) -> Any:
        env = {**os.environ, "NPUCENTER_URL": self.url, "NPUCENTER_API_KEY": key}
        out = subprocess.run(
            [sys.executable, "-m", "npucenter.cli.main", *args, "--json"],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def client(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, timeout=30)

    def models(self, key: str) -> list[str]:
        return [m.id for m in self.client(key).models.list()]

    def ask(self, key: str, model: str) -> int:
        """Tokens of one answer, retrying while the model's replicas start (503)."""
        deadline = time.monotonic() + DEADLINE_S
        while True:
            try:
                out = self.client(key).chat.completions.create(
                    model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
                )
                assert out.usage is not None
                return out.usage.completion_tokens
            except openai.InternalServerError as exc:
                assert exc.status_code == 503 and "retry-after" in exc.response.headers
                assert time.monotonic() < deadline, f"{model} never served"
                time.sleep(0.3)


def _until(ok: Callable[[], bool], what: str, center: Center) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not ok():
        assert center.proc is None or center.proc.poll() is None, "npucenter up exited"
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


@pytest.fixture
def center(tmp_path: Path) -> Iterator[Center]:
    (tmp_path / "fleet.yaml").write_text(FLEET)
    c = Center(tmp_path)
    c.start()
    try:
        yield c
    finally:
        if c.proc is not None:
            stop_process(c.proc, sig=signal.SIGKILL)


def test_a_deployment_serves_until_it_is_deleted(center: Center) -> None:
    assert center.ask(ADMIN, "llama-3.1-8b") == 4  # the fleet file's service
    center.cli("tenant", "create", "acme", "--kind", "company")
    center.cli("quota", "set", "--tenant", "acme", "--device", "h100", "--nominal", "1")
    key = center.cli("key", "create", "--tenant", "acme")["key"]
    servers = center.cli("fleet", "list")
    assert sorted(s["name"] for s in servers) == ["h100-0", "rngd-0"]  # registered at start

    dep = center.cli(
        "deploy", "create", "chat2", "-m", "qwen2.5-7b", "-d", "h100",
        "--precision", "fp8", "--replicas", "1", "--tenant", "acme",
    )  # fmt: skip
    assert dep["num_placed_replicas"] == 1
    _until(lambda: {"chat2", "qwen2.5-7b"} <= set(center.models(key)), "not listed", center)
    assert center.ask(key, "chat2") == 4  # by the deployment's name
    assert center.ask(key, "qwen2.5-7b") == 4  # by the model id

    center.cli("deploy", "scale", str(dep["id"]), "0")
    _until(lambda: "qwen2.5-7b" not in center.models(key), "scaled to 0 but listed", center)
    center.cli("deploy", "scale", str(dep["id"]), "1")
    assert center.ask(key, "chat2") == 4

    center.cli("deploy", "delete", str(dep["id"]))
    _until(lambda: "qwen2.5-7b" not in center.models(key), "deleted but listed", center)
    assert set(center.models(key)) == {"llama-3.1-8b"}
    with pytest.raises(openai.NotFoundError):
        center.client(key).chat.completions.create(
            model="chat2", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
        )

    before = center.cli("deploy", "list")
    center.stop()  # a second start on the same data directory
    center.start()
    assert center.ask(ADMIN, "llama-3.1-8b") == 4
    assert sorted(s["name"] for s in center.cli("fleet", "list")) == ["h100-0", "rngd-0"]
    after = center.cli("deploy", "list")
    assert [(d["name"], d["replicas"], d["num_placed_replicas"]) for d in after] == [
        (d["name"], d["replicas"], d["num_placed_replicas"]) for d in before
    ]
    assert [d["name"] for d in after] == ["llama-3.1-8b-rngd"]
