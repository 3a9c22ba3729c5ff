"""One process per SQLite database; the leader's pool is what followers serve."""

from __future__ import annotations

from pathlib import Path

import pytest

from npucenter.clock import FakeClock
from npucenter.errors import ConflictError
from npucenter.gateway.pool import ReplicaEndpoint, UpstreamPool
from npucenter.live.leader import apply_pool_document, hold_center_lock, pool_document
from npucenter.settings import Settings


def test_a_second_center_on_one_sqlite_database_is_refused(tmp_path: Path) -> None:
    settings = Settings.from_env({}, data_dir=tmp_path)
    assert settings.is_sqlite
    first = hold_center_lock(settings)
    assert first is not None
    try:
        with pytest.raises(ConflictError) as info:
            hold_center_lock(settings)
        assert "PostgreSQL" in (info.value.hint or "")
    finally:
        first.close()
    again = hold_center_lock(settings)  # the first one stopped: the next one starts
    assert again is not None
    again.close()


def test_postgresql_takes_no_file_lock(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"NPUCENTER_DATABASE_URL": "postgresql+psycopg://x/y"}, data_dir=tmp_path
    )
    assert hold_center_lock(settings) is None


class _Gateway:
    def __init__(self) -> None:
        self.pool = UpstreamPool(FakeClock())
        self.expected_models: set[str] = set()
        self.replica_servers: dict[str, str] = {}


def test_followers_serve_the_leaders_pool_without_its_secrets() -> None:
    leader, follower = _Gateway(), _Gateway()
    leader.pool.set(
        [
            ReplicaEndpoint(replica_id="rngd-0-r0", base_url="http://127.0.0.1:9001", model_id="m"),
            ReplicaEndpoint(
                replica_id="ext", base_url="http://10.0.0.1:8000", model_id="m", api_key="sk-1"
            ),
        ]
    )
    leader.pool.set_aliases({"chat": "m"})
    leader.expected_models = {"m", "other"}
    leader.standby_models = {"scaled"}  # type: ignore[attr-defined]
    doc = pool_document(leader)
    assert "sk-1" not in repr(doc)
    apply_pool_document(follower, doc)
    assert sorted(r.replica_id for r in follower.pool.replicas("m")) == ["ext", "rngd-0-r0"]
    assert follower.pool.resolve("chat") == "m"
    assert follower.expected_models == {"m", "other", "scaled"}
    assert follower.standby_models == {"scaled"}  # type: ignore[attr-defined]  # held there too


def test_a_replica_the_leader_drains_gets_nothing_new_from_the_followers() -> None:
    leader, follower = _Gateway(), _Gateway()
    endpoints = [
        ReplicaEndpoint(
            replica_id=f"rngd-0-r{i}", base_url=f"http://127.0.0.1:900{i}", model_id="m"
        )
        for i in range(2)
    ]
    leader.pool.set(endpoints)
    leader.reconciler = type("R", (), {"draining": {"rngd-0-r1": None}})()  # type: ignore[attr-defined]
    doc = pool_document(leader)
    assert doc["draining"] == ["rngd-0-r1"]
    apply_pool_document(follower, doc)
    assert len(follower.pool.replicas("m")) == 2  # still there: its streams go on
    assert [r.replica_id for r in follower.pool.candidates("m")] == ["rngd-0-r0"]
    leader.reconciler.draining = {}  # type: ignore[attr-defined]  # scaled back up
    apply_pool_document(follower, pool_document(leader))
    assert len(follower.pool.candidates("m")) == 2


def test_each_gateway_publishes_what_it_has_in_flight_per_replica() -> None:
    from npucenter.live.load import gateway_load

    gw = _Gateway()
    gw.pool.set(
        [
            ReplicaEndpoint(replica_id=f"r{i}", base_url=f"http://127.0.0.1:900{i}", model_id="m")
            for i in range(2)
        ]
    )
    gw.pool.get("r1").inflight = 3  # type: ignore[union-attr]
    gw.held_for_replica = {}  # type: ignore[attr-defined]
    gw.usage_totals = {}  # type: ignore[attr-defined]
    gw.dispatcher = type("D", (), {"queued": lambda self, m: 0})()  # type: ignore[attr-defined]
    gw.metrics = type("M", (), {"registry": type("R", (), {"collect": lambda self: []})()})()  # type: ignore[attr-defined]
    assert gateway_load(gw)["inflight"] == {"r1": 3}
