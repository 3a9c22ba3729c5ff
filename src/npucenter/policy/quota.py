"""A tenant's share, stated once: cards per device type (with cohort borrowing and lending),
device-seconds per device type, and tokens per second for shared services.

The same :class:`TenantQuota` governs job/replica admission (``policy.admission``) and request
admission in the gateway (:class:`TokenBudget`, the one token bucket: the gateway's token rate and
requests-per-minute limits are both kept in it). Pure values and functions: no I/O, no clock reads.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from npucenter.errors import InvalidConfigError, QuotaExceededError, RateLimitedError

__all__ = [
    "DEFAULT_TOKEN_BURST_S",
    "CohortQuota",
    "PriorityClass",
    "StopPolicy",
    "TenantQuota",
    "TokenAdmission",
    "TokenBudget",
]

#: Without an explicit ``burst_tokens``, a tenant may burst this many seconds of its token rate.
DEFAULT_TOKEN_BURST_S = 10.0


class PriorityClass(enum.IntEnum):
    """Priority classes, ordered: ``PRODUCTION > RESEARCH > EDUCATION > BEST_EFFORT``."""

    BEST_EFFORT = 0
    EDUCATION = 1
    RESEARCH = 2
    PRODUCTION = 3

    @property
    def label(self) -> str:
        """The name used at the API and CLI: ``"best-effort"``, ``"production"``..."""
        return self.name.lower().replace("_", "-")

    @classmethod
    def parse(cls, value: PriorityClass | str | int) -> PriorityClass:
        """A class from its label (``"best-effort"``), name or number.

        Raises:
            InvalidConfigError: the value names no class.
        """
        if isinstance(value, PriorityClass):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            try:
                return cls(value)
            except ValueError:
                pass
        elif isinstance(value, str):
            key = value.strip().upper().replace("-", "_")
            if key in cls.__members__:
                return cls[key]
        raise InvalidConfigError(
            "priority_class",
            value,
            "unknown priority class",
            hint="use one of: " + ", ".join(c.label for c in sorted(cls, reverse=True)),
        )


class StopPolicy(enum.StrEnum):
    """Holding a tenant (Kueue's ``stopPolicy``): ``hold`` admits nothing new, ``hold-and-drain``
    also preempts what runs (requeued, as any preemption)."""

    NONE = "none"
    HOLD = "hold"
    HOLD_AND_DRAIN = "hold-and-drain"


def _card_map(name: str, value: Mapping[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for device_type in sorted(value):
        cards = value[device_type]
        if not isinstance(device_type, str) or not device_type:
            raise InvalidConfigError(name, device_type, "device type must be a non-empty string")
        if isinstance(cards, bool) or not isinstance(cards, int) or cards < 0:
            raise InvalidConfigError(
                f"{name}[{device_type}]", cards, "must be a whole number of cards >= 0"
            )
        out[device_type] = cards
    return out


def _seconds_map(name: str, value: Mapping[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for device_type in sorted(value):
        amount = value[device_type]
        if isinstance(amount, bool) or not isinstance(amount, int | float):
            raise InvalidConfigError(f"{name}[{device_type}]", amount, "must be a number")
        if not math.isfinite(amount) or amount < 0:
            raise InvalidConfigError(f"{name}[{device_type}]", amount, "must be finite and >= 0")
        out[device_type] = float(amount)
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class TenantQuota:
    """What one tenant may use, stated once for jobs, replicas and tokens.

    Card limits are per device type (``"rngd"``, ``"atom"``, ``"h100"``...). The quota *names* a
    device type when any of the three card maps lists it (``nominal_cards={"h100": 0}`` names
    h100). A named type missing from ``borrowing_limit_cards`` may borrow without limit (as in
    Kueue); a type the quota does not name may not be borrowed at all (limit 0, as Kueue lets a
    ClusterQueue use only the flavors it lists) unless ``borrow_unnamed_device_types`` opts in.
    A type missing from ``lending_limit_cards`` lends all of its unused nominal cards; one missing
    from ``device_seconds_budget`` has no device-seconds budget.

    Mappings are copied (keys sorted) at construction; the value is therefore not hashable.
    """

    tenant: str
    #: tenants in the same cohort lend each other unused nominal cards; None: no cohort
    cohort: str | None = None
    #: the highest class this tenant's workloads may claim (a workload asking more is capped)
    priority_class: PriorityClass = PriorityClass.RESEARCH
    nominal_cards: Mapping[str, int] = field(default_factory=dict)  # device_type -> cards
    borrowing_limit_cards: Mapping[str, int] = field(default_factory=dict)  # missing: unlimited
    lending_limit_cards: Mapping[str, int] = field(default_factory=dict)  # missing: all nominal
    #: device_type -> device-seconds (cards x seconds) over the accounting period; missing: none
    device_seconds_budget: Mapping[str, float] = field(default_factory=dict)
    #: sustained token rate on shared services (prompt + completion); None: not metered
    tokens_per_s: float | None = None
    #: token bucket depth; None: ``tokens_per_s * DEFAULT_TOKEN_BURST_S``
    burst_tokens: float | None = None
    #: weight in dominant-resource fair sharing (2.0 gets twice the share of 1.0); 0: always last
    fair_share_weight: float = 1.0
    #: hold: admit nothing new; hold-and-drain: also preempt what runs (Kueue's stopPolicy)
    stop_policy: StopPolicy = StopPolicy.NONE
    #: opt-in: borrow device types the quota does not name (without limit); default: never
    borrow_unnamed_device_types: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.tenant, str) or not self.tenant.strip():
            raise InvalidConfigError("tenant", self.tenant, "must be a non-empty name")
        if self.cohort is not None and (not isinstance(self.cohort, str) or not self.cohort):
            raise InvalidConfigError("cohort", self.cohort, "must be a non-empty name or None")
        object.__setattr__(self, "priority_class", PriorityClass.parse(self.priority_class))
        nominal = _card_map("nominal_cards", self.nominal_cards)
        borrowing = _card_map("borrowing_limit_cards", self.borrowing_limit_cards)
        lending = _card_map("lending_limit_cards", self.lending_limit_cards)
        for device_type, cards in lending.items():
            if cards > nominal.get(device_type, 0):
                raise InvalidConfigError(
                    f"lending_limit_cards[{device_type}]",
                    cards,
                    f"exceeds the nominal quota of {nominal.get(device_type, 0)} cards",
                    hint="a tenant can lend at most its nominal cards",
                )
        object.__setattr__(self, "nominal_cards", nominal)
        object.__setattr__(self, "borrowing_limit_cards", borrowing)
        object.__setattr__(self, "lending_limit_cards", lending)
        object.__setattr__(
            self,
            "device_seconds_budget",
            _seconds_map("device_seconds_budget", self.device_seconds_budget),
        )
        for name in ("tokens_per_s", "burst_tokens"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value < 0
            ):
                raise InvalidConfigError(name, value, "must be a finite number >= 0 or None")
        _check_weight(self.fair_share_weight)
        try:
            object.__setattr__(self, "stop_policy", StopPolicy(self.stop_policy))
        except ValueError:
            raise InvalidConfigError(
                "stop_policy",
                self.stop_policy,
                "use one of: " + ", ".join(p.value for p in StopPolicy),
            ) from None
        if not isinstance(self.borrow_unnamed_device_types, bool):
            raise InvalidConfigError(
                "borrow_unnamed_device_types", self.borrow_unnamed_device_types, "must be a bool"
            )

    def names(self, device_type: str) -> bool:
        """Whether the quota names ``device_type`` (in any of its three card maps)."""
        return (
            device_type in self.nominal_cards
            or device_type in self.borrowing_limit_cards
            or device_type in self.lending_limit_cards
        )

    def nominal(self, device_type: str) -> int:
        """Nominal cards of ``device_type`` (0 when not stated)."""
        return self.nominal_cards.get(device_type, 0)

    def borrowing_limit(self, device_type: str) -> int | None:
        """Cards of ``device_type`` that may be borrowed beyond nominal; None: no limit.

        A tenant without a cohort has nobody to borrow from: its limit is 0. A device type the
        quota does not name has limit 0 unless ``borrow_unnamed_device_types`` is set.
        """
        if self.cohort is None:
            return 0
        if not self.names(device_type):
            return None if self.borrow_unnamed_device_types else 0
        return self.borrowing_limit_cards.get(device_type)

    def lending_limit(self, device_type: str) -> int:
        """Cards of ``device_type`` the tenant lends to its cohort when it does not use them."""
        if self.cohort is None:
            return 0
        return self.lending_limit_cards.get(device_type, self.nominal(device_type))

    def guaranteed(self, device_type: str) -> int:
        """Nominal cards never lent to anyone (``nominal - lending limit``)."""
        return self.nominal(device_type) - self.lending_limit(device_type)

    def max_cards(self, device_type: str) -> float:
        """Most cards of ``device_type`` the tenant may hold: nominal + borrowing limit."""
        limit = self.borrowing_limit(device_type)
        return math.inf if limit is None else float(self.nominal(device_type) + limit)

    def effective_burst_tokens(self) -> float:
        """The token-bucket depth: ``burst_tokens`` or ``tokens_per_s * DEFAULT_TOKEN_BURST_S``."""
        if self.tokens_per_s is None:
            return math.inf
        if self.burst_tokens is not None:
            return float(self.burst_tokens)
        return float(self.tokens_per_s) * DEFAULT_TOKEN_BURST_S


def _check_weight(weight: float) -> None:
    if isinstance(weight, bool) or not isinstance(weight, int | float):
        raise InvalidConfigError("fair_share_weight", weight, "must be a number")
    if not math.isfinite(weight) or weight < 0:
        raise InvalidConfigError("fair_share_weight", weight, "must be finite and >= 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class CohortQuota:
    """A cohort of tenants with a parent and quotas of its own (Kueue's hierarchical Cohort).

    Cohorts nest (center -> companies and universities -> departments): a tenant names its
    cohort, a cohort names its ``parent``. A cohort's quota is its own ``nominal_cards`` plus
    what its members and child cohorts lend; it lends up to ``lending_limit_cards`` of that to
    its parent (missing: all) and borrows from its parent up to ``borrowing_limit_cards``
    (missing: no limit). A cohort that tenants name but no ``CohortQuota`` describes is a flat
    cohort: no parent, no quota of its own.
    """

    name: str
    parent: str | None = None
    nominal_cards: Mapping[str, int] = field(default_factory=dict)  # device_type -> cards
    borrowing_limit_cards: Mapping[str, int] = field(default_factory=dict)  # missing: unlimited
    lending_limit_cards: Mapping[str, int] = field(default_factory=dict)  # missing: lend all
    fair_share_weight: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise InvalidConfigError("cohort", self.name, "must be a non-empty name")
        if self.parent is not None and (not isinstance(self.parent, str) or not self.parent):
            raise InvalidConfigError("parent", self.parent, "must be a non-empty name or None")
        if self.parent == self.name:
            raise InvalidConfigError("parent", self.parent, "a cohort cannot be its own parent")
        object.__setattr__(self, "nominal_cards", _card_map("nominal_cards", self.nominal_cards))
        object.__setattr__(
            self,
            "borrowing_limit_cards",
            _card_map("borrowing_limit_cards", self.borrowing_limit_cards),
        )
        object.__setattr__(
            self, "lending_limit_cards", _card_map("lending_limit_cards", self.lending_limit_cards)
        )
        _check_weight(self.fair_share_weight)


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenAdmission:
    """The verdict of :meth:`TokenBudget.admit`: the new budget state and, if refused, when to retry."""

    admitted: bool
    budget: TokenBudget  # the state to keep (unchanged level when refused, but refilled to now_s)
    requested_tokens: float
    available_tokens: float  # tokens in the bucket at now_s before this request
    retry_after_s: float  # 0 when admitted; inf when the request can never fit the burst


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenBudget:
    """A tenant's token bucket for shared services: pure, immutable, time injected.

    The gateway keeps one per tenant. At request time it calls :meth:`admit` with an estimate
    (prompt tokens + ``max_tokens``) and keeps the returned ``budget``; when the response is done it
    calls :meth:`settle` with the estimate and the actual count, which refunds the difference (or
    charges it: the level may go negative, a debt that delays the next request).

    Example::

        budget = TokenBudget.for_quota(quota, now_s=clock.now_s())
        verdict = budget.admit(1200, now_s=clock.now_s())
        budget = verdict.budget          # keep it, admitted or not
        if not verdict.admitted: ...     # 429 with Retry-After: verdict.retry_after_s
    """

    tenant: str
    rate_tokens_per_s: float  # inf: not metered
    burst_tokens: float  # bucket depth; inf: not metered
    level_tokens: float  # tokens available at updated_s (may be negative after settle)
    updated_s: float

    def __post_init__(self) -> None:
        if self.rate_tokens_per_s < 0 or math.isnan(self.rate_tokens_per_s):
            raise InvalidConfigError("rate_tokens_per_s", self.rate_tokens_per_s, "must be >= 0")
        if self.burst_tokens < 0 or math.isnan(self.burst_tokens):
            raise InvalidConfigError("burst_tokens", self.burst_tokens, "must be >= 0")
        if math.isnan(self.level_tokens) or math.isnan(self.updated_s):
            raise InvalidConfigError("level_tokens", self.level_tokens, "must be a number")

    @classmethod
    def for_quota(cls, quota: TenantQuota, *, now_s: float) -> TokenBudget:
        """A full bucket for ``quota`` (unmetered when ``quota.tokens_per_s`` is None)."""
        rate = math.inf if quota.tokens_per_s is None else float(quota.tokens_per_s)
        burst = quota.effective_burst_tokens()
        return cls(
            tenant=quota.tenant,
            rate_tokens_per_s=rate,
            burst_tokens=burst,
            level_tokens=burst,
            updated_s=now_s,
        )

    @classmethod
    def per_minute(cls, tenant: str, limit: float, *, now_s: float) -> TokenBudget:
        """A full bucket of ``limit`` refilled at ``limit / 60`` per second.

        The gateway's requests-per-minute limit is such a bucket, one token a request.
        """
        return cls(
            tenant=tenant,
            rate_tokens_per_s=limit / 60.0,
            burst_tokens=limit,
            level_tokens=limit,
            updated_s=now_s,
        )

    def relimited(
        self, *, rate_tokens_per_s: float, burst_tokens: float, now_s: float
    ) -> TokenBudget:
        """The bucket under changed limits: refilled to ``now_s`` at the old rate, then capped at
        the new burst (a debt is kept, no credit is granted)."""
        current = self.refilled(now_s)
        return replace(
            current,
            rate_tokens_per_s=rate_tokens_per_s,
            burst_tokens=burst_tokens,
            level_tokens=min(burst_tokens, current.level_tokens),
        )

    @property
    def metered(self) -> bool:
        """False when the tenant has no token limit."""
        return math.isfinite(self.rate_tokens_per_s)

    def refilled(self, now_s: float) -> TokenBudget:
        """The bucket at ``now_s``: refilled at the rate, capped at the burst.

        A ``now_s`` earlier than ``updated_s`` (clock skew between callers) refills nothing.
        """
        if not self.metered:
            return self
        return self._at(self._level_at(now_s), max(now_s, self.updated_s))

    def _level_at(self, now_s: float) -> float:
        elapsed_s = max(0.0, now_s - self.updated_s)
        return min(self.burst_tokens, self.level_tokens + elapsed_s * self.rate_tokens_per_s)

    def _at(self, level_tokens: float, updated_s: float) -> TokenBudget:
        # the gateway's hot path (twice a request): one constructor call, not dataclasses.replace
        return TokenBudget(
            tenant=self.tenant,
            rate_tokens_per_s=self.rate_tokens_per_s,
            burst_tokens=self.burst_tokens,
            level_tokens=level_tokens,
            updated_s=updated_s,
        )

    def admit(self, tokens: float, *, now_s: float) -> TokenAdmission:
        """Take ``tokens`` from the bucket if it holds them at ``now_s``; never raises on refusal."""
        if tokens < 0 or math.isnan(tokens):
            raise InvalidConfigError("tokens", tokens, "must be >= 0")
        if not self.metered:
            return TokenAdmission(
                admitted=True,
                budget=self,
                requested_tokens=tokens,
                available_tokens=math.inf,
                retry_after_s=0.0,
            )
        available = self._level_at(now_s)
        if tokens <= available:
            return TokenAdmission(
                admitted=True,
                budget=self._at(available - tokens, max(now_s, self.updated_s)),
                requested_tokens=tokens,
                available_tokens=available,
                retry_after_s=0.0,
            )
        current = self._at(available, max(now_s, self.updated_s))
        if tokens > current.burst_tokens or current.rate_tokens_per_s == 0:
            retry_after_s = math.inf
        else:
            retry_after_s = (tokens - available) / current.rate_tokens_per_s
        return TokenAdmission(
            admitted=False,
            budget=current,
            requested_tokens=tokens,
            available_tokens=available,
            retry_after_s=retry_after_s,
        )

    def require(self, tokens: float, *, now_s: float) -> TokenBudget:
        """Like :meth:`admit` but returns the new budget or raises a typed error.

        Raises:
            RateLimitedError: the bucket will hold ``tokens`` after ``retry_after_s``.
            QuotaExceededError: ``tokens`` exceeds the burst, so it can never be admitted.
        """
        verdict = self.admit(tokens, now_s=now_s)
        if verdict.admitted:
            return verdict.budget
        available = max(0.0, verdict.available_tokens)
        if math.isinf(verdict.retry_after_s):
            raise QuotaExceededError(
                self.tenant,
                "tokens",
                tokens,
                verdict.budget.burst_tokens,
                hint="send a shorter request (fewer prompt tokens or a lower max_tokens) "
                "or ask the operator for a larger token burst",
            )
        raise RateLimitedError(self.tenant, "tokens", tokens, available, verdict.retry_after_s)

    def settle(self, *, estimated_tokens: float, actual_tokens: float, now_s: float) -> TokenBudget:
        """Correct an admitted estimate once the true count is known (refund or extra charge)."""
        if not self.metered:
            return self
        level = min(self.burst_tokens, self._level_at(now_s) + estimated_tokens - actual_tokens)
        return self._at(level, max(now_s, self.updated_s))
