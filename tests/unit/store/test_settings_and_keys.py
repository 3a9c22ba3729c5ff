"""Settings from the environment, key secrets and the job state machine's shape."""

from __future__ import annotations

from pathlib import Path

import pytest

from npucenter.cli.db import _safe
from npucenter.errors import InvalidConfigError
from npucenter.settings import Settings, normalize_database_url
from npucenter.store import heads
from npucenter.store.repository import (
    JOB_STATES,
    JOB_TRANSITIONS,
    hash_secret,
    new_secret,
    verify_secret,
)


def test_settings_default_to_sqlite_in_the_data_dir(tmp_path):
    s = Settings.from_env({}, data_dir=tmp_path)
    assert s.database_url == f"sqlite:///{tmp_path / 'npucenter.db'}" and s.is_sqlite
    assert s.admin_key is None and s.url == "http://127.0.0.1:8000"


def test_settings_read_the_environment(tmp_path):
    env = {
        "NPUCENTER_DATABASE_URL": "postgresql://u:p@127.0.0.1:5432/db",
        "NPUCENTER_ADMIN_KEY": "a-long-enough-admin-key",
        "NPUCENTER_URL": "http://127.0.0.1:9000/",
        "NPUCENTER_API_KEY": "npc_x",
        "NPUCENTER_DATA_DIR": str(tmp_path),
    }
    s = Settings.from_env(env)
    assert s.database_url == "postgresql+psycopg://u:p@127.0.0.1:5432/db" and not s.is_sqlite
    assert s.url == "http://127.0.0.1:9000" and s.api_key == "npc_x"
    assert s.data_dir == Path(tmp_path)


@pytest.mark.parametrize("url", ["mysql://x/y", "oracle://a"])
def test_unsupported_database_urls_are_refused(url):
    with pytest.raises(InvalidConfigError) as info:
        normalize_database_url(url)
    assert info.value.field == "NPUCENTER_DATABASE_URL"


def test_a_short_admin_key_is_refused(tmp_path):
    with pytest.raises(InvalidConfigError) as info:
        Settings(data_dir=tmp_path, admin_key="short")
    assert info.value.value == "<hidden>"  # the key itself never appears in errors


def test_secrets_carry_a_short_id_and_are_hashed_salted_and_slow():
    made = [new_secret() for _ in range(200)]
    assert len({secret for _, secret in made}) == 200
    assert all(secret.startswith(f"npc_{short}_") and len(short) == 8 for short, secret in made)
    s = made[0][1]
    stored = hash_secret(s)
    assert stored.startswith("scrypt$16384$8$1$") and stored != hash_secret(s)  # salted
    assert verify_secret(s, stored) and not verify_secret(s + "x", stored)
    assert not verify_secret(s, "sha256$garbage") and not verify_secret(s, "")


def test_a_migrated_sha256_row_verifies_the_original_secret():
    import hashlib

    legacy = hash_secret(hashlib.sha256(b"npc_old-secret").hexdigest(), legacy_sha256=True)
    assert legacy.startswith("scrypt-sha256$")
    assert verify_secret("npc_old-secret", legacy) and not verify_secret("npc_old-secreT", legacy)


def test_job_state_machine_shape():
    assert set(JOB_TRANSITIONS) == set(JOB_STATES)
    terminal = {s for s, nxt in JOB_TRANSITIONS.items() if not nxt}
    assert terminal == {"succeeded", "failed", "cancelled"}
    assert JOB_TRANSITIONS["preempted"] == {"queued", "cancelled"}
    # every state is reachable from queued
    seen, todo = {"queued"}, ["queued"]
    while todo:
        for nxt in JOB_TRANSITIONS[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    assert seen == set(JOB_STATES)


def test_packaged_migrations_have_one_head():
    assert len(heads()) == 1


def test_database_urls_are_shown_without_password():
    assert (
        _safe("postgresql+psycopg://user:pw@host:5432/db")
        == "postgresql+psycopg://user@host:5432/db"
    )
    assert _safe("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"


def test_redaction_keeps_no_key_a_job_printed_or_reported() -> None:
    from npucenter.store.keys import key_in_command, new_secret, redact_document, redact_secrets

    short_id, secret = new_secret()
    text = f"key={secret}\nAuthorization: Bearer sk-abc.def\n--api-key hunter2 --rate 10\n"
    out = redact_secrets(text)
    assert secret not in out and "sk-abc.def" not in out and "hunter2" not in out
    assert f"npc_{short_id}_[redacted]" in out and "--rate 10" in out
    assert redact_secrets(out) == out  # idempotent
    assert redact_secrets("output_tokens_per_s 12.5, max_tokens=5") == (
        "output_tokens_per_s 12.5, max_tokens=5"
    )
    assert redact_secrets("--api-key $(NPUCENTER_API_KEY)") == "--api-key $(NPUCENTER_API_KEY)"
    doc = {"api_key": "x-123", "runs": [{"note": f"used {secret}"}], secret: 1}
    assert secret not in repr(redact_document(doc)) and "x-123" not in repr(redact_document(doc))
    # a command: a generated key anywhere, or an --api-key value; code naming api_key is fine
    assert key_in_command(["bench", "--api-key", "abc"]) == 2
    assert key_in_command(["bench", "--api-key=abc"]) == 1
    assert key_in_command(["sh", "-c", f"curl -H 'Authorization: Bearer {secret}'"]) == 2
    assert key_in_command(["bench", "--api-key", "$KEY"]) is None
    assert key_in_command(["python", "-c", "OpenAI(api_key=os.environ['OPENAI_API_KEY'])"]) is None
