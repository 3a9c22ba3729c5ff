"""The shared builders make values the package accepts, so tests that use them test something."""

from __future__ import annotations

from pathlib import Path

from factories import (
    make_admitted,
    make_database,
    make_endpoint,
    make_quota,
    make_seq_request,
    make_snapshot,
    make_tenant,
    make_workload,
)
from npucenter.policy.admission import decide_admission
from npucenter.store.repository import Repository


def test_admission_builders_make_a_snapshot_the_policy_admits_into() -> None:
    snapshot = make_snapshot(
        quotas=[make_quota("acme", 2)], running=[make_admitted("old", card_indices=(0,))]
    )
    decision = decide_admission(snapshot, [make_workload("new", num_cards=1)])
    assert [a.workload_id for a in decision.admitted] == ["new"]
    assert decision.admitted[0].card_indices != (0,)  # card 0 is held by "old"


def test_value_builders_default_every_argument() -> None:
    assert make_seq_request().prompt_tokens > 0
    assert make_endpoint("r1", max_inflight=2).max_inflight == 2


def test_store_builders_make_a_tenant_with_quota_and_key(tmp_path: Path) -> None:
    db = make_database(tmp_path)
    with db.session() as session:
        repo = Repository(session, lambda: 1.0)
        tenant, secret = make_tenant(repo, device_type="rngd", nominal_cards=3, key=True)
        assert repo.lookup_key(secret).tenant_id == tenant.id
        assert [q.nominal_cards for q in repo.list_quotas(tenant_id=tenant.id)] == [3]
    db.dispose()
