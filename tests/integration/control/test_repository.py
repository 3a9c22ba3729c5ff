"""The service layer the gateway calls: key lookup, tenant quotas, ledger appends."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text

from factories import make_tenant
from npucenter.errors import AuthenticationError, ConflictError, InvalidConfigError, NotFoundError
from npucenter.store import Database
from npucenter.store.models import ApiKey, UsageEntry
from npucenter.store.repository import Repository, verify_secret


@pytest.fixture
def db(database_url):
    from npucenter.settings import normalize_database_url

    database = Database(normalize_database_url(database_url))
    yield database
    database.dispose()


def _repo(session):
    return Repository(session, lambda: 1000.0)


def test_keys_are_stored_hashed_and_looked_up_by_secret(db):
    with db.session() as s:
        repo = _repo(s)
        tenant = repo.create_tenant("kaist", "university")
        tenant_id = tenant.id
        key, secret = repo.create_key(tenant_id=tenant.id, scope="tenant", name="ci")
        key_row_id = key.id
    assert secret.startswith("npc_") and len(secret) > 40
    with db.session() as s:
        stored = s.scalars(select(ApiKey)).one()
        assert stored.secret_hash.startswith("scrypt$") and verify_secret(
            secret, stored.secret_hash
        )
        assert secret.startswith(f"npc_{stored.short_id}_")  # only the short id is in clear
        row = str(s.execute(text("SELECT * FROM api_keys")).all())
        assert secret not in row and secret[len(f"npc_{stored.short_id}_") :][:6] not in row
        principal = _repo(s).lookup_key(secret)
    assert principal.tenant == "kaist" and principal.tenant_id == tenant_id
    assert principal.key_row_id == key_row_id and not principal.is_admin
    with db.session() as s, pytest.raises(AuthenticationError):
        _repo(s).lookup_key(secret + "x")
    with db.session() as s:
        _repo(s).revoke_key(key_row_id)
    with db.session() as s, pytest.raises(AuthenticationError):
        _repo(s).lookup_key(secret)


def test_admin_key_is_created_once(db):
    with db.session() as s:
        status = _repo(s).ensure_admin_key(None)
    generated = status.secret
    assert status.state == "generated" and generated is not None and generated.startswith("npc_")
    with db.session() as s:
        assert _repo(s).ensure_admin_key("another-admin-key-123456").state == "ignored"
        assert _repo(s).lookup_key(generated).is_admin
        with pytest.raises(AuthenticationError):
            _repo(s).lookup_key("another-admin-key-123456")


def test_a_revoked_operator_admin_key_is_not_stored_again(db):
    chosen = "operator-chosen-admin-key-1"
    with db.session() as s:
        assert _repo(s).ensure_admin_key(chosen).state == "created"
        key_id = _repo(s).lookup_key(chosen).key_row_id
    with db.session() as s:
        _repo(s).revoke_key(key_id)
    with db.session() as s:
        status = _repo(s).ensure_admin_key(chosen)
        assert (status.state, status.key_id, status.revoked_at_s) == ("revoked", key_id, 1000.0)
        with pytest.raises(AuthenticationError):
            _repo(s).lookup_key(chosen)  # the revocation stands
        assert len(_repo(s).list_keys()) == 1


def test_tenant_quotas_are_values_with_tenant_level_cohort(db):
    with db.session() as s:
        repo = _repo(s)
        t = repo.create_tenant("acme", "company")
        repo.set_quota(t, "rngd", nominal_cards=8, cohort="a", priority_class="production")
        repo.set_quota(
            t,
            "h100",
            nominal_cards=2,
            borrowing_limit_cards=1,
            cohort="b",
            priority_class="production",
            tokens_per_s=500.0,
        )
        views = repo.tenant_quotas(t.id)
    assert {v.device_type: v.nominal_cards for v in views} == {
        "furiosa_rngd": 8,
        "nvidia_h100_sxm": 2,
    }
    assert {v.cohort for v in views} == {"b"} and {v.tokens_per_s for v in views} == {500.0}


def test_ledger_is_append_only(db):
    with db.session() as s:
        repo = _repo(s)
        t = make_tenant(repo)
        repo.append_usage(
            tenant_id=t.id, kind="tokens", tokens_in=10, tokens_out=20, energy_j=3.5, ref="req-1"
        )
    with pytest.raises(RuntimeError), db.session() as s:
        s.scalars(select(UsageEntry)).one().tokens_in = 0
        s.flush()
    with pytest.raises(RuntimeError), db.session() as s:
        s.delete(s.scalars(select(UsageEntry)).one())
        s.flush()
    with db.session() as s:
        rows = _repo(s).list_usage()
        assert [(r.tokens_in, r.tokens_out, r.energy_j) for r in rows] == [(10, 20, 3.5)]
        with pytest.raises(InvalidConfigError):
            _repo(s).append_usage(tenant_id=t.id, kind="tokens", tokens_in=-1)
        with pytest.raises(NotFoundError):
            _repo(s).append_usage(tenant_id=999, kind="tokens")


def test_unique_constraints_map_to_conflict(db):
    with db.session() as s:
        _repo(s).create_tenant("acme", "company")
    # Bypass the repository's check: the database constraint itself answers ConflictError.
    from npucenter.store.models import Tenant

    with pytest.raises(ConflictError), db.session() as s:
        s.add(Tenant(name="acme", kind="company", created_at_s=0.0))
        s.flush()
    with db.session() as s:
        assert len(_repo(s).list_tenants()) == 1


def test_a_write_based_on_a_stale_read_is_a_conflict(db):
    with db.session() as s:
        repo = _repo(s)
        tenant = make_tenant(repo)
        job_id = repo.submit_job(
            tenant, name="j", kind="benchmark", device_type="rngd", num_cards=1, image="img"
        ).id
    with pytest.raises(ConflictError) as info, db.session() as stale:
        job = _repo(stale).get_job(job_id)  # read, then someone else cancels it
        with db.session() as other:
            _repo(other).transition_job(_repo(other).get_job(job_id), "cancelled")
        _repo(stale).transition_job(job, "admitted")
        stale.flush()
    assert info.value.details["reason"] == "concurrent_update"
    with db.session() as s:
        job = _repo(s).get_job(job_id)
        assert job.state == "cancelled"
        assert [e.to_state for e in _repo(s).job_events(job)] == ["queued", "cancelled"]


def test_unknown_keys_cost_no_scrypt_unless_they_could_match_and_slow_checks_are_capped(
    db, monkeypatch
):
    import npucenter.store.keys as keys

    calls = []
    real = keys._scrypt
    monkeypatch.setattr(keys, "_scrypt", lambda *a: calls.append(1) or real(*a))
    with db.session() as s:
        _repo(s).ensure_admin_key("operator-chosen-admin-key-1")
    calls.clear()
    for i in range(50):  # generated-format secrets whose short id names no row
        with db.session() as s, pytest.raises(AuthenticationError):
            _repo(s).lookup_key(f"npc_{chr(97 + i % 26) * 8}_" + "x" * 43)
    assert calls == []
    db.key_memo = keys.KeyMemo(max_slow_per_s=1.0)  # burst 2, then one a second
    refused = 0
    for i in range(60):  # other secrets are tried against the operator's admin row: capped
        with db.session() as s, pytest.raises(AuthenticationError) as info:
            _repo(s).lookup_key(f"guess-{i}-0123456789")
        refused += "too many" in info.value.message
    assert 0 < len(calls) <= 15 and refused >= 40
