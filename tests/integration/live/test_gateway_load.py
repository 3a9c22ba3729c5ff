"""Several gateways on one PostgreSQL: each publishes its queues and latency, the leader's
autoscaler adds them to its own (issue 15: only the leader's queue and histograms counted).

Two control-plane apps on one database, one gateway each: ``a`` leads (runs the autoscaler),
``b`` follows. What ``b`` holds and the TTFT it saw scale the deployment; a row older than the
staleness bound is ignored.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from npucenter.api import create_app
from npucenter.fleet import fleet_from_dict
from npucenter.gateway import Gateway, StaticKeyResolver
from npucenter.gateway.pool import ReplicaEndpoint
from npucenter.live.autoscaler import Autoscaler
from npucenter.live.fleet import register_fleet
from npucenter.live.leader import Leadership, share_replicas
from npucenter.live.load import LOAD_PREFIX, gateway_load, load_row_name, merge_loads
from npucenter.settings import Settings
from npucenter.store import coordination

pytestmark = [pytest.mark.postgres]

MODEL = "llama-3.1-8b"
FLEET = {
    "name": "two-gateways",
    "servers": [{"device": "rngd", "count": 1, "cards_per_server": 4}],
    "services": [
        {"model": MODEL, "device": "rngd", "min_replicas": 1, "max_replicas": 4,
         "autoscale": {"target_concurrency_per_replica": 16}},
    ],
    "slos": {MODEL: {"ttft_s": 1.0, "tpot_s": 0.1}},
}  # fmt: skip


@pytest.fixture
def database_url() -> Iterator[str]:
    base = os.environ.get("NPUCENTER_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("NPUCENTER_TEST_POSTGRES_URL is not set (scripts/pg-test-server.sh run -- ...)")
    import psycopg

    name = f"npc_load_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield "postgresql+psycopg://" + base.split("://", 1)[1].rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _app(tmp_path: Path, database_url: str, name: str) -> Any:
    settings = Settings(
        data_dir=tmp_path / name, database_url=database_url, admin_key="admin-0123456789abcdef"
    )
    settings.ensure_data_dir()
    return create_app(settings)


def _gateway() -> Gateway:
    gw = Gateway(keys=StaticKeyResolver({}))
    gw.pool.set([ReplicaEndpoint(replica_id="rngd-0-r0", base_url="http://127.0.0.1:9",
                                 model_id=MODEL)])  # fmt: skip
    return gw


@pytest.fixture
def two(tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    import npucenter.api.admission as admission

    a, b = _app(tmp_path, database_url, "a"), _app(tmp_path, database_url, "b")
    fleet = fleet_from_dict(FLEET)
    register_fleet(a.state.control, fleet)
    monkeypatch.setattr(admission, "admit_after_change", lambda control: None)
    yield a, b, fleet
    for app in (a, b):
        app.state.control.db.dispose()


def _desired(app: Any) -> int:
    with app.state.control.tx() as repo:
        (dep,) = repo.list_deployments()
        return int(dep.replicas)


async def test_the_leader_counts_what_another_gateway_holds_and_its_ttft(two) -> None:  # type: ignore[no-untyped-def]
    a, b, fleet = two
    gw_a, gw_b = _gateway(), _gateway()
    now = [1000.0]
    scaler = Autoscaler(a.state.control, gw_a, fleet, now_s=lambda: now[0], own_row="load/a")
    db_b = b.state.control.db
    # b holds 40 requests; its row is older than the bound: ignored, nothing to do
    gw_b.held_for_replica[MODEL] = 40
    coordination.publish(db_b, "load/b", gateway_load(gw_b), now_s=now[0] - 10.0)
    assert await scaler.tick() == []
    # fresh: 40 held over one replica asks for 3 (16 per replica), one step doubles to 2
    coordination.publish(db_b, "load/b", gateway_load(gw_b), now_s=now[0])
    assert await scaler.tick() == [("llama-3.1-8b-rngd", 1, 2)]
    assert _desired(a) == 2
    # b's queue drained, but the TTFT it saw missed the SLO (1 s) for 10 requests: one more
    gw_b.held_for_replica[MODEL] = 0
    for _ in range(10):
        gw_b.metrics.ttft.labels(MODEL).observe(5.0)
    now[0] += 2.0
    coordination.publish(db_b, "load/b", gateway_load(gw_b), now_s=now[0])
    assert await scaler.tick() == [("llama-3.1-8b-rngd", 2, 3)]
    # the leader's own row is counted in process, never twice
    coordination.publish(a.state.control.db, "load/a", {"models": {MODEL: {"held": 999}}},
                         now_s=now[0])  # fmt: skip
    assert scaler._read_remote(now[0])[MODEL]["held"] == 0  # b's 0, not a's 999


async def test_each_gateway_publishes_its_row_every_tick(two) -> None:  # type: ignore[no-untyped-def]
    _a, b, _fleet = two
    gw_b = _gateway()
    gw_b.held_for_replica[MODEL] = 3
    gw_b.metrics.ttft.labels(MODEL).observe(0.2)
    db = b.state.control.db
    leadership = Leadership(db, interval_s=0.1)  # not the leader: it never took the lock
    async with share_replicas(gw_b, leadership, interval_s=0.1):
        await asyncio.sleep(0.5)
        rows = coordination.read_published_prefix(db, LOAD_PREFIX, since_s=0.0)
    mine = dict(rows)[load_row_name()]
    load = merge_loads([mine])[MODEL]
    assert load["held"] == 3 and load["ttft"][-1] == ["+Inf", 1.0]
    # a gateway that stops takes its row with it
    assert load_row_name() not in dict(
        coordination.read_published_prefix(db, LOAD_PREFIX, since_s=0.0)
    )


async def test_rows_of_gateways_gone_for_long_are_deleted(two) -> None:  # type: ignore[no-untyped-def]
    a, _b, fleet = two
    db = a.state.control.db
    coordination.publish(db, "load/old", {"models": {}}, now_s=1000.0)
    coordination.publish(db, "load/recent", {"models": {}}, now_s=1700.0)
    scaler = Autoscaler(a.state.control, _gateway(), fleet, now_s=lambda: 1900.0)
    await scaler.tick()
    left = {name for name, _doc in coordination.read_published_prefix(db, LOAD_PREFIX, since_s=0)}
    assert left == {"load/recent"}  # older than 600 s: deleted; stale but recent: kept
