"""The console's sessions (rows in the database) and its limit on failed sign-ins (in memory).

Sessions live in the store (:mod:`npucenter.store.sessions`), so every ``npucenter up`` process
on one database (behind a load balancer) knows every session, and a restart keeps them. The key
that signed in is not kept (only its row id): each page reads the session and the key's row, so
revoking the key in any process ends the session at its next request.

Failed sign-ins are counted per client address and per key prefix (the part of a key that names
it: ``npc_`` and the short id; an operator-chosen key's first 12 characters), in this process's
memory: after ``max_failures`` within ``window_s`` the sign-in form answers 429 with
Retry-After until the oldest failure leaves the window. A successful sign-in writes its session
row and nothing else; a refused one writes nothing to the database.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from npucenter.api.context import ControlPlane
from npucenter.policy.principal import Principal
from npucenter.store.repository import SessionView

__all__ = [
    "SESSION_IDLE_S",
    "SESSION_MAX_S",
    "SESSION_REFRESH_S",
    "ConsoleSessions",
    "SignInLimiter",
]

SESSION_IDLE_S = 8 * 3600.0  # a session unused this long ends
SESSION_MAX_S = 24 * 3600.0  # and every session ends this long after its sign-in
SESSION_REFRESH_S = 300.0  # the idle expiry moves forward at most this often (one write)


@dataclass
class ConsoleSessions:
    """Console sessions in the database of ``control()`` (call from the thread pool)."""

    control: Callable[[], ControlPlane]
    idle_s: float = SESSION_IDLE_S
    max_s: float = SESSION_MAX_S
    refresh_s: float = SESSION_REFRESH_S

    def open(self, principal: Principal) -> tuple[str, str]:
        """A new session for the key that ``principal`` authenticated: ``(token, csrf)``."""
        assert principal.key_row_id is not None, "a console session needs a stored key"
        with self.control().tx() as repo:
            return repo.open_session(principal.key_row_id, idle_s=self.idle_s, max_s=self.max_s)

    def get(self, token: str) -> SessionView | None:
        """The live session of ``token`` (its key still valid), else None."""
        with self.control().tx() as repo:
            return repo.read_session(
                token, idle_s=self.idle_s, max_s=self.max_s, refresh_s=self.refresh_s
            )

    def close(self, token: str) -> None:
        """End a session (sign-out)."""
        with self.control().tx() as repo:
            repo.close_session(token)


@dataclass
class SignInLimiter:
    """At most ``max_failures`` failed sign-ins per ``window_s`` per client and per key prefix.

    Memory is bounded: at most ``max_tracked`` addresses and prefixes, the least recently
    failed forgotten first. ``clock`` is monotonic seconds (tests inject one).
    """

    max_failures: int = 5
    window_s: float = 60.0
    max_tracked: int = 10_000
    clock: Callable[[], float] = time.monotonic
    _failures: OrderedDict[str, deque[float]] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _salt: bytes = field(default_factory=lambda: secrets.token_bytes(16))

    def retry_after_s(self, client: str, secret: str = "") -> int:
        """Whole seconds until ``client`` (and the key ``secret`` names) may try again; 0: now."""
        now = self.clock()
        with self._lock:
            waits = [self._wait(k, now) for k in self._keys(client, secret)]
        return max(waits, default=0)

    def failed(self, client: str, secret: str) -> None:
        """Count a failed sign-in of ``client`` with ``secret``."""
        now = self.clock()
        with self._lock:
            for k in self._keys(client, secret):
                times = self._failures.pop(k, None) or deque(maxlen=self.max_failures)
                times.append(now)
                self._failures[k] = times  # most recent last
            while len(self._failures) > self.max_tracked:
                self._failures.popitem(last=False)

    def _wait(self, key: str, now: float) -> int:
        times = self._failures.get(key)
        if times is None or len(times) < self.max_failures:
            return 0
        left = times[0] + self.window_s - now
        return math.ceil(left) if left > 0 else 0

    def _keys(self, client: str, secret: str) -> list[str]:
        keys = [f"addr:{client}"]
        if secret:  # keyed hash of the prefix: no key material is kept, even in memory
            prefix = secret[:12].encode("utf-8", "replace")
            keys.append("key:" + hmac.new(self._salt, prefix, hashlib.sha256).hexdigest())
        return keys
