"""The replicas the gateway can send requests to, with the live state routing looks at.

A :class:`Replica` is mutable gateway-side state (in-flight requests, outstanding tokens,
health, the metering integrals); routing policies never see it directly, only a snapshot built
from it. Replicas come and go as the executor starts and restarts them (:meth:`UpstreamPool.set`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from npucenter.clock import Clock
from npucenter.errors import InvalidConfigError
from npucenter.metering.attribution import ReplicaMeter

__all__ = ["Replica", "ReplicaEndpoint", "UpstreamPool"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaEndpoint:
    """Where one replica listens and what it serves (from the executor or a config)."""

    replica_id: str
    base_url: str  # e.g. "http://127.0.0.1:8101" (the gateway appends "/v1/...")
    model_id: str  # the model name tenants ask for
    device_id: str = "virtual"
    device_kind: str = "npu"  # "npu" | "gpu"
    tp: int = 1
    max_inflight: int = 64  # requests the gateway lets the replica run at once; more wait
    kv_capacity_tokens: int = 0  # 0 = unknown
    busy_power_w: float = 0.0  # power while running requests until telemetry says otherwise
    idle_power_w: float = 0.0  # power with nothing to run (shown, never charged to a tenant)
    api_key: str | None = field(default=None, repr=False)  # an external server's key (secret)

    def __post_init__(self) -> None:
        if self.max_inflight < 1:
            raise InvalidConfigError("max_inflight", self.max_inflight, "must be >= 1")
        if not self.base_url.startswith(("http://", "https://")):
            raise InvalidConfigError("base_url", self.base_url, "must be an http(s) URL")


class Replica:
    """Gateway-side live state of one replica (one event loop)."""

    __slots__ = (
        "down_until_s",
        "endpoint",
        "engine_foreign",
        "engine_running",
        "engine_waiting",
        "idle_power_w",
        "inflight",
        "kv_usage_fraction",
        "meter",
        "num_failures",
        "num_served",
        "outstanding_tokens",
        "url_chat",
        "url_completions",
    )

    def __init__(self, endpoint: ReplicaEndpoint, clock: Clock) -> None:
        self.endpoint = endpoint
        base = endpoint.base_url.rstrip("/")
        self.url_chat = f"{base}/v1/chat/completions"
        self.url_completions = f"{base}/v1/completions"
        self.inflight = 0
        self.outstanding_tokens = 0  # estimated tokens of the requests in flight
        self.kv_usage_fraction = 0.0  # from the engine's metrics when scraped
        self.engine_running = 0  # requests the engine says it runs (its own metrics)
        self.engine_waiting = 0  # requests queued inside the engine (its own metrics)
        self.engine_foreign = 0  # requests in the engine the gateway did not send (at the scrape)
        self.idle_power_w = endpoint.idle_power_w  # W, updated from the engine's metrics
        self.down_until_s = 0.0
        self.num_failures = 0
        self.num_served = 0
        self.meter = ReplicaMeter(tp=endpoint.tp, busy_power_w=endpoint.busy_power_w, clock=clock)

    @property
    def replica_id(self) -> str:
        """The replica's id."""
        return self.endpoint.replica_id

    def is_up(self, now_s: float) -> bool:
        """Not in a failure cool-down."""
        return now_s >= self.down_until_s

    def has_slot(self) -> bool:
        """Fewer requests in flight than the replica may run."""
        return self.inflight < self.endpoint.max_inflight


class UpstreamPool:
    """Replicas by model."""

    def __init__(self, clock: Clock, endpoints: Iterable[ReplicaEndpoint] = ()) -> None:
        self._clock = clock
        self._replicas: dict[str, Replica] = {}
        self._by_model: dict[str, list[Replica]] = {}
        self._aliases: dict[str, str] = {}  # another name -> model id (a deployment's name)
        self.set(endpoints)

    def set(self, endpoints: Iterable[ReplicaEndpoint]) -> None:
        """Replace the replica set; replicas whose endpoint is unchanged keep their state."""
        replicas: dict[str, Replica] = {}
        for endpoint in endpoints:
            old = self._replicas.get(endpoint.replica_id)
            replicas[endpoint.replica_id] = (
                old
                if old is not None and old.endpoint == endpoint
                else Replica(endpoint, self._clock)
            )
        self._replicas = replicas
        by_model: dict[str, list[Replica]] = {}
        for replica in replicas.values():
            by_model.setdefault(replica.endpoint.model_id, []).append(replica)
        self._by_model = by_model

    def add(self, endpoint: ReplicaEndpoint) -> None:
        """Add or replace one replica."""
        self.set(
            [
                *(
                    r.endpoint
                    for r in self._replicas.values()
                    if r.replica_id != endpoint.replica_id
                ),
                endpoint,
            ]
        )

    def remove(self, replica_id: str) -> None:
        """Forget one replica (requests in flight on it finish or fail on their own)."""
        self.set(r.endpoint for r in self._replicas.values() if r.replica_id != replica_id)

    def now_s(self) -> float:
        """The pool's clock."""
        return self._clock.now_s()

    def set_aliases(self, aliases: Mapping[str, str]) -> None:
        """Other names tenants may ask for (alias -> model id, e.g. a deployment's name)."""
        self._aliases = {a: m for a, m in aliases.items() if a != m}

    def aliases(self) -> dict[str, str]:
        """Alias -> model id."""
        return dict(self._aliases)

    def resolve(self, name: str) -> str:
        """The model id ``name`` stands for: itself unless it is only an alias."""
        return name if name in self._by_model else self._aliases.get(name, name)

    def models(self) -> list[str]:
        """Models with at least one replica and their aliases, sorted."""
        return sorted(
            {*self._by_model, *(a for a, m in self._aliases.items() if m in self._by_model)}
        )

    def replicas(self, model_id: str | None = None) -> list[Replica]:
        """Every replica (of one model)."""
        if model_id is None:
            return list(self._replicas.values())
        return list(self._by_model.get(model_id, ()))

    def get(self, replica_id: str) -> Replica | None:
        """The replica with that id, if any."""
        return self._replicas.get(replica_id)

    def candidates(self, model_id: str, exclude: frozenset[str] = frozenset()) -> list[Replica]:
        """Replicas of ``model_id`` that are up, have a free slot and are not excluded."""
        now_s = self._clock.now_s()
        return [
            r
            for r in self._by_model.get(model_id, ())
            if r.inflight < r.endpoint.max_inflight
            and now_s >= r.down_until_s
            and r.replica_id not in exclude
        ]

    def num_up(self, model_id: str, exclude: frozenset[str] = frozenset()) -> int:
        """Replicas of ``model_id`` that are up (busy or not) and not excluded."""
        now_s = self._clock.now_s()
        return sum(
            1
            for r in self._by_model.get(model_id, ())
            if r.is_up(now_s) and r.replica_id not in exclude
        )

    def mark_failed(self, replica: Replica, cooldown_s: float) -> None:
        """Keep new requests off ``replica`` for ``cooldown_s`` (it failed a request)."""
        replica.num_failures += 1
        replica.down_until_s = self._clock.now_s() + cooldown_s
