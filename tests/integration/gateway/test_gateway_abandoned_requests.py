"""A client that goes away frees the engine: the upstream request is closed within a bound."""

from __future__ import annotations

import json
import socket
import time
from urllib.parse import urlsplit

import pytest

from npucenter.wire.fake import FakeScript

BOUND_S = 1.0  # from the client's hang-up to the engine seeing its request closed


def _send(url: str, body: dict[str, object]) -> socket.socket:
    parts = urlsplit(url)
    raw = json.dumps(body).encode()
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer sk-acme\r\n"
        b"content-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(raw) + raw
    )
    return sock


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "streaming"])
def test_the_upstream_request_is_closed_soon_after_the_client_goes(make_rig, stream: bool) -> None:  # type: ignore[no-untyped-def]
    rig = make_rig([FakeScript(itl_s=0.05)])  # 100 tokens: 5 s of generation
    up = rig.upstreams[0]
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100}
    sock = _send(rig.url, {**body, "stream": stream})
    if stream:
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")  # tokens are flowing
    else:
        deadline = time.monotonic() + 30.0
        while up.num_requests == 0 and time.monotonic() < deadline:
            time.sleep(0.01)  # the engine has it
        assert up.num_requests == 1
    sock.close()
    gone = time.monotonic()
    while up.num_cancelled == 0 and time.monotonic() - gone < 5.0:
        time.sleep(0.005)
    closed_after_s = time.monotonic() - gone
    assert up.num_cancelled == 1 and up.num_completed == 0
    assert closed_after_s < BOUND_S, f"the engine kept working {closed_after_s:.2f} s"
    deadline = time.monotonic() + 30.0
    while rig.gateway.pool.replicas("m")[0].inflight and time.monotonic() < deadline:
        time.sleep(0.01)
    assert rig.gateway.pool.replicas("m")[0].inflight == 0  # the slot came back
