"""API keys: a salted slow hash of each secret, a short public id, lookup and revocation.

NOTE(store): a generated secret is ``npc_<short id>_<43 random characters>``; the short id (8
characters, shown in listings) finds the row and scrypt (salted, parameters in the stored
string) verifies the rest, so nothing stored lets anyone test guesses quickly. An
operator-chosen secret (``NPUCENTER_ADMIN_KEY``) carries no id: it is found by trying the few
rows marked ``lookup_tag="*"``. Rows migrated from the unsalted-SHA-256 scheme (migration 0004)
keep working: their hash is scrypt over the old digest and their tag is the first 8 characters
of the old 12-character prefix (tenant keys) or ``*`` (admin keys).

A verified secret is remembered per database (:class:`KeyMemo`, a keyed fingerprint -> row id)
so only a key's first use pays for scrypt; revocation is read from the row on every lookup and
takes effect at once. Slow verifications are rate-limited so that a flood of unknown keys
cannot spend the CPU.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, or_, select

from npucenter.errors import AuthenticationError, InvalidConfigError, NotFoundError
from npucenter.policy.principal import Principal
from npucenter.store.base import StoreBase, check_choice
from npucenter.store.models import ApiKey, ConsoleSession, Tenant

__all__ = [
    "KEY_PREFIX",
    "SCAN_TAG",
    "AdminKeyStatus",
    "KeyMemo",
    "KeyStore",
    "Principal",
    "hash_secret",
    "job_key_name",
    "key_in_command",
    "new_secret",
    "redact_document",
    "redact_secrets",
    "verify_secret",
]

KEY_PREFIX = "npc_"
SCAN_TAG = "*"  # rows found by trying them (operator-chosen secrets, migrated admin keys)
_ID_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"  # no 0/o, 1/l
_GENERATED = re.compile(r"npc_([a-z2-9]{8})_[A-Za-z0-9_-]{32,}")
# scrypt: 16 MiB and ~20 ms a verification on one core (OWASP's floor for scrypt is N=2^17
# for passwords; API keys are verified once per process, then remembered).
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
_MAX_SCAN_ROWS = 32
_JOB_KEY_NAME = re.compile(r"job-(\d+)")
REDACTED = "[redacted]"
# what a key looks like where it must not be kept: a generated key (its short id stays, as in
# listings), the value after "Bearer", an --api-key option or an api_key/password/secret field
_KEY_SHAPED = re.compile(r"(npc_[a-z2-9]{8}_)[A-Za-z0-9_-]{8,}")
_KEY_VALUED = re.compile(
    r"""(?ix)
    ( \bbearer\s+
    | --?api[-_]?key(?:\s+|=)
    | \b(?:api[-_]?key|authorization|password|secret)["']?\s*[:=]\s*["']?(?:bearer\s+)?
    )
    (?!\[redacted\]|\$|bearer\b)[^\s"',;}]+  # a $NAME or $(NAME) reference is no key
    """
)

_SECRET_FIELD = re.compile(r"(?i)[\w-]*(?:api[-_]?key|authorization|password|secret)")


def job_key_name(job_id: int) -> str:
    """The name of job ``job_id``'s own key (scope ``job``)."""
    return f"job-{job_id}"


def redact_secrets(text: str, secrets_: tuple[str, ...] = ()) -> str:
    """``text`` with every key-shaped part (and each of ``secrets_``) replaced by ``[redacted]``.

    What a job printed, reported or failed with is stored and shown; a key in it must not be.
    """
    for secret in secrets_:
        if len(secret) >= 8:
            text = text.replace(secret, REDACTED)
    text = _KEY_SHAPED.sub(lambda m: m.group(1) + REDACTED, text)
    return _KEY_VALUED.sub(lambda m: m.group(1) + REDACTED, text)


def key_in_command(argv: Sequence[str]) -> int | None:
    """The index of the first argument of ``argv`` that carries a key, if one does.

    A generated key anywhere in an argument, or the value of an ``--api-key`` option (a
    ``$NAME`` reference excepted). Stricter than :func:`redact_secrets`, whose field names would
    also match code (``api_key=`` read from the environment) a command may rightly carry.
    """
    for i, arg in enumerate(argv):
        if _KEY_SHAPED.search(arg):
            return i
        name, eq, value = arg.partition("=")
        if name.lower() in ("--api-key", "--api_key"):
            if not eq:
                value = argv[i + 1] if i + 1 < len(argv) else ""
                i += 1
            if value and not value.startswith("$"):
                return i
    return None


def redact_document(value: Any) -> Any:
    """A JSON value with :func:`redact_secrets` applied to every string in it (keys too)."""
    if isinstance(value, str):
        return redact_secrets(value)
    if isinstance(value, dict):
        return {
            redact_secrets(str(k)): (
                REDACTED
                if isinstance(v, str) and v and _SECRET_FIELD.fullmatch(str(k))
                else redact_document(v)
            )
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact_document(v) for v in value]
    return value


def new_secret() -> tuple[str, str]:
    """A fresh ``(short id, secret)``: ``npc_<id>_`` and 43 URL-safe random characters."""
    short_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))
    return short_id, f"{KEY_PREFIX}{short_id}_{secrets.token_urlsafe(32)}"


def hash_secret(secret: str, *, legacy_sha256: bool = False) -> str:
    """The stored form of a secret: ``scrypt$N$r$p$salt$hash`` (base64, salt of 16 bytes).

    ``legacy_sha256``: ``secret`` is the sha256 hex digest a pre-0004 row stored; the result
    (``scrypt-sha256$...``) verifies the original secret.
    """
    salt = secrets.token_bytes(16)
    digest = _scrypt(secret.encode(), salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P)
    scheme = "scrypt-sha256" if legacy_sha256 else "scrypt"
    return f"{scheme}${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_secret(secret: str, stored: str) -> bool:
    """Whether ``secret`` is the one ``stored`` (from :func:`hash_secret`) was made of."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        material = secret.encode()
        if scheme == "scrypt-sha256":
            material = hashlib.sha256(material).hexdigest().encode()
        elif scheme != "scrypt":
            return False
        got = _scrypt(material, _unb64(salt), int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, _unb64(digest))


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminKeyStatus:
    """What start-up did with ``NPUCENTER_ADMIN_KEY``.

    ``state``: ``created`` (stored now), ``generated`` (none given: ``secret`` is new),
    ``active`` (already stored), ``ignored`` (another admin key exists; this one is not
    stored), ``revoked`` (stored but revoked: it does not authenticate).
    """

    state: str
    secret: str | None = None
    key_id: int | None = None
    revoked_at_s: float | None = None


class KeyMemo:
    """Per-database memory of verified secrets (keyed fingerprint -> key row id) and a limiter.

    The fingerprint is an HMAC under a per-process random key, so the memo holds no secret.
    ``max_slow_per_s`` bounds scrypt verifications (burst twice that).
    """

    def __init__(self, *, max_entries: int = 10_000, max_slow_per_s: float = 20.0) -> None:
        self._key = secrets.token_bytes(32)
        self._ids: OrderedDict[bytes, int] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()
        self._rate = max_slow_per_s
        self._tokens = 2 * max_slow_per_s
        self._at = time.monotonic()

    def fingerprint(self, secret: str) -> bytes:
        """The memo's key for a secret."""
        return hmac.new(self._key, secret.encode(), hashlib.sha256).digest()

    def get(self, fp: bytes) -> int | None:
        """The key row id a secret was verified against, if remembered."""
        with self._lock:
            found = self._ids.get(fp)
            if found is not None:
                self._ids.move_to_end(fp)
            return found

    def put(self, fp: bytes, key_id: int) -> None:
        """Remember a verified secret."""
        with self._lock:
            self._ids[fp] = key_id
            self._ids.move_to_end(fp)
            while len(self._ids) > self._max:
                self._ids.popitem(last=False)

    def take_slow(self, cost: int = 1) -> bool:
        """Spend ``cost`` slow verifications; False when the limit is reached."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(2 * self._rate, self._tokens + (now - self._at) * self._rate)
            self._at = now
            if self._tokens < cost:
                return False
            self._tokens -= cost
            return True


class KeyStore(StoreBase):
    """API keys: create (hashed), list, revoke, look up a secret, the start-up admin key."""

    def create_key(
        self, *, tenant_id: int | None, scope: str, name: str = "", secret: str | None = None
    ) -> tuple[ApiKey, str]:
        """Store a new key (hashed) and return it with its secret, which is never stored.

        ``secret`` (admin keys only): an operator-chosen secret, found by trying (tag ``*``).
        """
        check_choice("scope", scope, ("admin", "tenant", "job"))
        if (scope != "admin") != (tenant_id is not None):
            raise InvalidConfigError("scope", scope, "tenant keys need a tenant; admin keys none")
        if scope == "job" and _JOB_KEY_NAME.fullmatch(name) is None:
            raise InvalidConfigError("name", name, "a job's key is named job-<id>")
        if secret is not None and scope != "admin":
            raise InvalidConfigError("secret", "…", "only an admin key may have a chosen secret")
        if secret is None:
            short_id, secret = new_secret()
            tag = ""
        else:
            short_id, tag = new_secret()[0], SCAN_TAG
        key = ApiKey(
            short_id=short_id,
            secret_hash=hash_secret(secret),
            lookup_tag=tag,
            tenant_id=tenant_id,
            scope=scope,
            name=name,
            created_at_s=self.now_s(),
        )
        self.session.add(key)
        self.session.flush()
        self._memo().put(self._memo().fingerprint(secret), key.id)
        return key, secret

    def ensure_admin_key(self, secret: str | None) -> AdminKeyStatus:
        """At start: store the admin key (``secret`` or a new one) unless the database has one.

        A ``secret`` that matches a revoked key is not stored again (that would undo the
        revocation): the status says ``revoked`` and the caller starts anyway.
        """
        if secret:
            match = self._find(secret, include_revoked=True, limit=False)
            if match is not None:
                state = "active" if match.revoked_at_s is None else "revoked"
                return AdminKeyStatus(state=state, key_id=match.id, revoked_at_s=match.revoked_at_s)
        active = self.session.scalar(
            select(ApiKey.id).where(ApiKey.scope == "admin", ApiKey.revoked_at_s.is_(None))
        )
        if active is not None:
            return AdminKeyStatus(state="ignored" if secret else "active", key_id=active)
        key, stored = self.create_key(tenant_id=None, scope="admin", name="admin", secret=secret)
        if secret:
            return AdminKeyStatus(state="created", key_id=key.id)
        return AdminKeyStatus(state="generated", secret=stored, key_id=key.id)

    def list_keys(self, *, tenant_id: int | None = None) -> list[ApiKey]:
        """Keys (never their secrets), all or one tenant's."""
        stmt = select(ApiKey).order_by(ApiKey.id)
        if tenant_id is not None:
            stmt = stmt.where(ApiKey.tenant_id == tenant_id)
        return list(self.session.scalars(stmt))

    def revoke_job_keys(self, *, keep: frozenset[int] = frozenset()) -> list[int]:
        """Revoke every job's key but those in ``keep`` (a runner that starts holds none)."""
        rows = self.session.scalars(
            select(ApiKey).where(ApiKey.scope == "job", ApiKey.revoked_at_s.is_(None))
        )
        revoked = []
        for key in rows:
            if key.id not in keep:
                key.revoked_at_s = self.now_s()
                revoked.append(key.id)
        return revoked

    def revoke_key(self, key_id: int, *, tenant_id: int | None = None) -> ApiKey:
        """Mark a key revoked; it stops authenticating at once."""
        key = self.row(ApiKey, key_id)
        if key is None or (tenant_id is not None and key.tenant_id != tenant_id):
            raise NotFoundError("key", str(key_id))
        if key.revoked_at_s is None:
            key.revoked_at_s = self.now_s()
        # its console sessions end with it (store.sessions also checks the key on every use)
        self.session.execute(delete(ConsoleSession).where(ConsoleSession.key_id == key.id))
        return key

    def lookup_key(self, secret: str) -> Principal:
        """The principal of a secret; raises AuthenticationError when unknown or revoked."""
        key = self._find(secret, include_revoked=False, limit=True)
        if key is None or key.revoked_at_s is not None:
            raise AuthenticationError(
                "the API key is not valid", hint="check NPUCENTER_API_KEY or ask for a new key"
            )
        return self.principal_of(key)

    def principal_of(self, key: ApiKey) -> Principal:
        """The principal a key row stands for (its tenant's name, its scope)."""
        name = ""
        if key.tenant_id is not None:
            tenant = self.row(Tenant, key.tenant_id)
            name = tenant.name if tenant else ""
        job = _JOB_KEY_NAME.fullmatch(key.name) if key.scope == "job" else None
        return Principal(
            key_id=f"key-{key.id}",
            key_row_id=key.id,
            tenant=name,
            tenant_id=key.tenant_id,
            scopes=frozenset({key.scope}),
            is_admin=key.scope == "admin",
            job_id=int(job.group(1)) if job is not None else None,
        )

    def _find(self, secret: str, *, include_revoked: bool, limit: bool) -> ApiKey | None:
        """The row ``secret`` verifies against (remembered, by its short id, or by trying)."""
        if not isinstance(secret, str) or not secret or len(secret) > 512:
            return None
        memo = self._memo()
        fp = memo.fingerprint(secret)
        known = memo.get(fp)
        if known is not None:
            return self.row(ApiKey, known)
        generated = _GENERATED.fullmatch(secret)
        if generated is not None:
            stmt = select(ApiKey).where(ApiKey.short_id == generated.group(1))
        else:
            stmt = select(ApiKey).where(
                or_(ApiKey.lookup_tag == SCAN_TAG, ApiKey.lookup_tag == secret[:8])
            )
        if not include_revoked:
            stmt = stmt.where(ApiKey.revoked_at_s.is_(None))
        rows = list(self.session.scalars(stmt.order_by(ApiKey.id.desc()).limit(_MAX_SCAN_ROWS)))
        if limit and rows and not memo.take_slow(len(rows)):
            raise AuthenticationError(
                "too many unknown API keys tried; try again in a second",
                hint="keys are verified with a slow hash; a known key is not slowed down",
            )
        for row in rows:
            if verify_secret(secret, row.secret_hash):
                memo.put(fp, row.id)
                return row
        return None

    def _memo(self) -> KeyMemo:
        memo = self.session.info.get("key_memo")
        if not isinstance(memo, KeyMemo):  # a session not from Database.session(): no memory
            memo = self.session.info["key_memo"] = KeyMemo()
        return memo


def _scrypt(material: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(material, salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024, dklen=32)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode(), validate=True)
