"""The gateway driven by the official `openai` client: streaming and not, errors, metering."""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest

from npucenter.wire.fake import FakeScript
from npucenter.wire.tokens import synthetic_text

MSG = [{"role": "user", "content": "Say hello to the proving ground."}]


def _rows_when_flushed(rig, n: int, timeout_s: float = 30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rows = rig.ledger.rows()
        if len(rows) >= n:
            return rows
        time.sleep(0.02)
    return rig.ledger.rows()


def test_chat_non_streaming_returns_usage_and_meters_it(make_rig) -> None:  # type: ignore[no-untyped-def]
    rig = make_rig()
    out = rig.client().chat.completions.create(model="m", messages=MSG, max_tokens=7)
    assert out.usage is not None and out.usage.completion_tokens == 7
    assert out.choices[0].message.content
    rows = _rows_when_flushed(rig, 1)
    assert len(rows) == 1
    row = rows[0]
    assert (row.tenant, row.key_id, row.status) == ("acme", "key-acme", "ok")
    assert row.input_tokens == out.usage.prompt_tokens and row.output_tokens == 7
    assert row.replica_id == "r0" and row.device_s > 0 and row.energy_j > 0


def test_chat_streaming_passes_tokens_and_hides_usage_unless_asked(make_rig) -> None:  # type: ignore[no-untyped-def]
    rig = make_rig([FakeScript(itl_s=0.001)])
    client = rig.client()
    chunks = list(
        client.chat.completions.create(model="m", messages=MSG, max_tokens=5, stream=True)
    )
    assert [c.choices[0].delta.content for c in chunks] == [synthetic_text(i, 1) for i in range(5)]
    assert all(c.usage is None for c in chunks)
    # the gateway asked the engine for usage anyway, to meter the stream
    assert rig.upstreams[0].last_body["stream_options"]["include_usage"] is True
    with_usage = list(
        client.chat.completions.create(
            model="m",
            messages=MSG,
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert with_usage[-1].usage is not None and with_usage[-1].usage.completion_tokens == 5
    rows = _rows_when_flushed(rig, 2)
    assert [r.output_tokens for r in rows] == [5, 5]


def test_completions_endpoint_streaming_and_not(make_rig) -> None:  # type: ignore[no-untyped-def]
    rig = make_rig()
    client = rig.client()
    out = client.completions.create(model="m", prompt="once upon", max_tokens=3)
    assert out.choices[0].text == synthetic_text(0, 3)
    texts = [
        c.choices[0].text
        for c in client.completions.create(model="m", prompt="x", max_tokens=2, stream=True)
    ]
    assert texts == [synthetic_text(0, 1), synthetic_text(1, 1)]


def test_models_lists_the_served_models_and_is_metered(make_rig) -> None:  # type: ignore[no-untyped-def]
    rig = make_rig()
    assert [m.id for m in rig.client("sk-admin").models.list()] == ["m"]
    rows = _rows_when_flushed(rig, 1)
    assert rows[0].endpoint == "/v1/models" and rows[0].tenant == "operator"


def test_admin_key_is_metered_like_any_other(make_rig) -> None:  # type: ignore[no-untyped-def]
    rig = make_rig()
    rig.client("sk-admin").chat.completions.create(model="m", messages=MSG, max_tokens=2)
    rows = _rows_when_flushed(rig, 1)
    assert rows[0].key_id == "key-admin" and rows[0].output_tokens == 2


def test_auth_errors(make_rig) -> None:  # type: ignore[no-untyped-def]
    rig = make_rig()
    with pytest.raises(openai.AuthenticationError) as info:
        rig.client("sk-nope").models.list()
    assert info.value.body["code"] == "unauthenticated"  # type: ignore[index]
    with pytest.raises(openai.PermissionDeniedError):
        rig.client("sk-readonly").chat.completions.create(model="m", messages=MSG)


def test_rate_limit_is_429_with_retry_after(make_rig) -> None:  # type: ignore[no-untyped-def]
    rig = make_rig()
    client = rig.client("sk-uni")
    client.chat.completions.create(model="m", messages=MSG, max_tokens=1)
    client.chat.completions.create(model="m", messages=MSG, max_tokens=1)
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="m", messages=MSG, max_tokens=1)
    assert int(info.value.response.headers["retry-after"]) >= 1
    assert info.value.body["type"] == "rate_limit_error"  # type: ignore[index]


def test_quota_is_enforced_on_the_reservation(make_rig) -> None:  # type: ignore[no-untyped-def]
    rig = make_rig()
    client = rig.client("sk-tiny")
    with pytest.raises(openai.RateLimitError) as info:  # 429 quota_exceeded
        client.chat.completions.create(model="m", messages=MSG, max_tokens=100)
    assert info.value.body["code"] == "quota_exceeded"  # type: ignore[index]
    assert "retry-after" not in info.value.response.headers
    assert rig.upstreams[0].num_requests == 0  # rejected before reaching an engine


def test_bad_requests(make_rig) -> None:  # type: ignore[no-untyped-def]
    rig = make_rig()
    with pytest.raises(openai.NotFoundError):
        rig.client().chat.completions.create(model="nope", messages=MSG)
    with pytest.raises(openai.BadRequestError) as info:
        rig.client().chat.completions.create(model="m", messages=[])
    assert info.value.body["param"] == "messages"  # type: ignore[index]
    r = httpx.post(
        f"{rig.url}/v1/chat/completions",
        content=b"{not json",
        headers={"authorization": "Bearer sk-acme"},
    )
    assert r.status_code == 400 and set(r.json()["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize("fail", ["status", "before_first"])
def test_failure_before_first_token_is_retried_on_another_replica(make_rig, fail: str) -> None:  # type: ignore[no-untyped-def]
    rig = make_rig([FakeScript(fail=fail), FakeScript()])
    client = rig.client()
    for stream in (False, True):
        # r0 is tried first by least-outstanding routing (ties by id) until it is cooled down
        if stream:
            chunks = list(
                client.chat.completions.create(model="m", messages=MSG, max_tokens=3, stream=True)
            )
            assert len(chunks) == 3
        else:
            out = client.chat.completions.create(model="m", messages=MSG, max_tokens=3)
            assert out.usage is not None and out.usage.completion_tokens == 3
    assert rig.upstreams[1].num_completed == 2
    assert rig.upstreams[0].num_requests >= 1
    metrics = httpx.get(f"{rig.url}/metrics").text
    assert 'npucenter_gateway_retries_total{model="m"}' in metrics


def test_all_replicas_failing_gives_502_not_a_hang(make_rig) -> None:  # type: ignore[no-untyped-def]
    rig = make_rig([FakeScript(fail="status"), FakeScript(fail="before_first")])
    with pytest.raises(openai.InternalServerError) as info:
        rig.client().chat.completions.create(model="m", messages=MSG, max_tokens=3)
    assert info.value.status_code in (502, 503)


def test_failure_after_first_token_ends_the_stream_with_an_error_event(make_rig) -> None:  # type: ignore[no-untyped-def]
    rig = make_rig([FakeScript(fail="mid_stream", fail_after_events=2)])
    got = []
    with pytest.raises(openai.APIError) as info:
        for chunk in rig.client().chat.completions.create(
            model="m", messages=MSG, max_tokens=10, stream=True
        ):
            got.append(chunk)
    assert len(got) == 2
    assert info.value.body["code"] == "upstream_error"  # type: ignore[index]
    rows = _rows_when_flushed(rig, 1)
    assert rows[0].status == "error" and rows[0].output_tokens == 0


def test_requests_wait_in_the_gateway_not_in_the_engine(make_rig) -> None:  # type: ignore[no-untyped-def]
    rig = make_rig([FakeScript(itl_s=0.02)], max_inflight=1)

    async def run() -> list[int]:
        client = openai.AsyncOpenAI(base_url=f"{rig.url}/v1", api_key="sk-acme", max_retries=0)
        outs = await asyncio.gather(
            *(
                client.chat.completions.create(model="m", messages=MSG, max_tokens=4)
                for _ in range(4)
            )
        )
        await client.close()
        return [o.usage.completion_tokens for o in outs if o.usage]

    assert asyncio.run(run()) == [4, 4, 4, 4]
    assert rig.upstreams[0].num_completed == 4


def test_client_disconnect_cancels_the_upstream_stream(make_rig) -> None:  # type: ignore[no-untyped-def]
    rig = make_rig([FakeScript(itl_s=0.05)])
    body = {"model": "m", "messages": MSG, "max_tokens": 200, "stream": True}
    with (
        httpx.Client() as http,
        http.stream(
            "POST",
            f"{rig.url}/v1/chat/completions",
            json=body,
            headers={"authorization": "Bearer sk-acme"},
        ) as resp,
    ):
        assert resp.status_code == 200
        for _ in resp.iter_raw():
            break
    deadline = time.monotonic() + 30.0
    while rig.upstreams[0].num_cancelled == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert rig.upstreams[0].num_cancelled == 1 and rig.upstreams[0].num_completed == 0
    rows = _rows_when_flushed(rig, 1)
    assert rows[0].status == "cancelled" and 1 <= rows[0].output_tokens < 200  # what it was sent


def test_metrics_expose_ttft_tpot_tokens_and_replicas(make_rig) -> None:  # type: ignore[no-untyped-def]
    rig = make_rig([FakeScript(itl_s=0.002)])
    list(rig.client().chat.completions.create(model="m", messages=MSG, max_tokens=4, stream=True))
    tokens = 'npucenter_gateway_tokens_total{kind="output",model="m",tenant="acme"} 4.0'
    deadline = time.monotonic() + 30.0  # metered once the stream's last bytes are out: wait
    text = httpx.get(f"{rig.url}/metrics").text
    while tokens not in text and time.monotonic() < deadline:
        time.sleep(0.02)
        text = httpx.get(f"{rig.url}/metrics").text
    for name in (
        "npucenter_gateway_ttft_seconds_bucket",
        "npucenter_gateway_tpot_seconds_bucket",
        'npucenter_gateway_tokens_total{kind="output",model="m",tenant="acme"} 4.0',
        'npucenter_replica_power_watts{device="rngd",model="m",replica="r0"}',
        "npucenter_gateway_queued_requests 0.0",
    ):
        assert name in text


def test_the_httpx_upstream_client_behaves_the_same(make_rig) -> None:  # type: ignore[no-untyped-def]
    rig = make_rig([FakeScript(fail="before_first"), FakeScript()], upstream_client="httpx")
    client = rig.client()
    out = client.chat.completions.create(model="m", messages=MSG, max_tokens=3)
    assert out.usage is not None and out.usage.completion_tokens == 3
    chunks = list(
        client.chat.completions.create(model="m", messages=MSG, max_tokens=4, stream=True)
    )
    assert [c.choices[0].delta.content for c in chunks] == [synthetic_text(i, 1) for i in range(4)]
    assert rig.upstreams[1].num_completed == 2


def test_keep_alive_connections_are_reused(make_rig) -> None:  # type: ignore[no-untyped-def]
    rig = make_rig()
    client = rig.client()
    for _ in range(5):
        client.chat.completions.create(model="m", messages=MSG, max_tokens=2)
        list(client.chat.completions.create(model="m", messages=MSG, max_tokens=2, stream=True))
    pool = rig.gateway._upstream.pool._idle  # type: ignore[union-attr]
    assert sum(len(stack) for stack in pool.values()) == 1


def test_client_disconnect_cancels_a_non_streaming_request(make_rig) -> None:  # type: ignore[no-untyped-def]
    rig = make_rig([FakeScript(itl_s=0.05)])
    body = {"model": "m", "messages": MSG, "max_tokens": 100}  # 5 s of "generation"
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{rig.url}/v1/chat/completions",
            json=body,
            headers={"authorization": "Bearer sk-acme"},
            timeout=0.5,
        )
    deadline = time.monotonic() + 30.0
    while rig.upstreams[0].num_cancelled == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert rig.upstreams[0].num_cancelled == 1 and rig.upstreams[0].num_completed == 0
    rows = _rows_when_flushed(rig, 1)
    assert rows[0].status == "cancelled" and rows[0].total_tokens == 0  # nothing delivered: free
    assert rig.gateway.pool.replicas("m")[0].inflight == 0  # the slot came back
