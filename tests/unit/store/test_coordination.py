"""The store's half of several processes on one database: shared buckets, published documents."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from npucenter.store import Database, upgrade
from npucenter.store import coordination as co


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Database:
    url = f"sqlite:///{tmp_path_factory.mktemp('coord') / 'c.db'}"
    upgrade(url)
    return Database(url)


def test_a_lease_takes_from_the_refilled_bucket_and_give_back_caps_at_the_burst(
    db: Database,
) -> None:
    got = co.lease(db, "t/tokens", rate_per_s=10, burst=20, need=5, want=10, now_s=100.0)
    assert (got.granted, got.available) == (10.0, 20.0)
    got = co.lease(db, "t/tokens", rate_per_s=10, burst=20, need=15, want=15, now_s=100.0)
    assert got.granted == 0.0 and got.retry_after_s == pytest.approx(0.5)
    got = co.lease(db, "t/tokens", rate_per_s=10, burst=20, need=15, want=15, now_s=100.5)
    assert got.granted == 15.0  # 10 + 0.5 s at 10/s
    co.give_back(db, "t/tokens", 100.0, now_s=100.5)
    got = co.lease(db, "t/tokens", rate_per_s=10, burst=20, need=1, want=1000, now_s=100.5)
    assert got.granted == 20.0  # capped at the burst, however much came back


def test_more_than_the_burst_never_fits(db: Database) -> None:
    got = co.lease(db, "u/tokens", rate_per_s=10, burst=20, need=21, want=21, now_s=0.0)
    assert got.granted == 0.0 and math.isinf(got.retry_after_s)


def test_published_documents_replace_each_other(db: Database) -> None:
    assert co.read_published(db, "pool") is None
    co.publish(db, "pool", {"endpoints": [1]}, now_s=1.0)
    co.publish(db, "pool", {"endpoints": [2]}, now_s=2.0)
    assert co.read_published(db, "pool") == ({"endpoints": [2]}, 2.0)


def test_is_postgres() -> None:
    assert co.is_postgres("postgresql+psycopg://h/db")
    assert not co.is_postgres(f"sqlite:///{Path('x.db')}")


def test_documents_by_prefix_only_recent_ones(db: Database) -> None:
    co.publish(db, "held/a-1", {"m": 2}, now_s=100.0)
    co.publish(db, "held/b-2", {"m": 1}, now_s=90.0)
    co.publish(db, "other", {"m": 9}, now_s=100.0)
    got = co.read_published_prefix(db, "held/", since_s=95.0)
    assert got == [("held/a-1", {"m": 2})]
