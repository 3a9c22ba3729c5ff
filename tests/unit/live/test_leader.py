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
