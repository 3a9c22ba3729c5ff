"""Console sessions: rows every center process on the database shares, kept over restarts.

A session is a random token in the browser's cookie; the row holds only its sha256 (the token
has 256 random bits, so a fast hash is enough), the API key that signed in, the CSRF token and
the expiry. Every use reads the row and the key's, so a revoked key (revoked in any process)
ends its sessions at the next request. A session expires after ``idle_s`` unused and at the
latest ``max_s`` after sign-in; the expiry is pushed forward at most once per ``refresh_s``, so
a page view costs no write. Expired rows are purged at each sign-in.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, select

from npucenter.policy.principal import Principal
from npucenter.store.keys import KeyStore
from npucenter.store.models import ApiKey, ConsoleSession

__all__ = ["ConsoleSessionStore", "SessionView", "token_hash"]

_MAX_PER_KEY = 100  # a key's sessions beyond this: the oldest ends


def token_hash(token: str) -> str:
    """The stored form of a session token."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


@dataclass(frozen=True, slots=True)
class SessionView:
    """A live session: who signed in and the CSRF token of its forms."""

    principal: Principal
    csrf: str
    expires_at_s: float


class ConsoleSessionStore(KeyStore):
    """Open, read (touching the expiry now and then) and close console sessions."""

    def open_session(self, key_id: int, *, idle_s: float, max_s: float) -> tuple[str, str]:
        """A new session for the key ``key_id``: ``(token, csrf)``; purges expired rows."""
        now = self.now_s()
        self.session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at_s <= now))
        held = list(
            self.session.scalars(
                select(ConsoleSession.token_hash)
                .where(ConsoleSession.key_id == key_id)
                .order_by(ConsoleSession.created_at_s.desc())
                .offset(_MAX_PER_KEY - 1)
            )
        )
        if held:  # the key's oldest sessions beyond the bound end
            self.session.execute(delete(ConsoleSession).where(ConsoleSession.token_hash.in_(held)))
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        self.session.add(
            ConsoleSession(
                token_hash=token_hash(token),
                key_id=key_id,
                csrf=csrf,
                created_at_s=now,
                expires_at_s=now + min(idle_s, max_s),
            )
        )
        self.session.flush()
        return token, csrf

    def read_session(
        self, token: str, *, idle_s: float, max_s: float, refresh_s: float
    ) -> SessionView | None:
        """The live session of ``token``, else None (unknown, expired, or its key revoked:
        the row goes). Pushes the idle expiry forward when ``refresh_s`` has passed."""
        if not token or len(token) > 128:
            return None
        row = self.session.get(ConsoleSession, token_hash(token))
        if row is None:
            return None
        now = self.now_s()
        key = self.row(ApiKey, row.key_id)
        if row.expires_at_s <= now or key is None or key.revoked_at_s is not None:
            self.session.delete(row)
            return None
        latest = min(now + idle_s, row.created_at_s + max_s)
        if latest - row.expires_at_s >= refresh_s:
            row.expires_at_s = latest
        return SessionView(
            principal=self.principal_of(key), csrf=row.csrf, expires_at_s=row.expires_at_s
        )

    def close_session(self, token: str) -> None:
        """End a session (sign-out)."""
        self.session.execute(
            delete(ConsoleSession).where(ConsoleSession.token_hash == token_hash(token))
        )
