"""The replicas the gateway can send requests to, with the live state routing looks at.

A :class:`Replica` is mutable gateway-side state (in-flight requests, outstanding tokens,
health, the metering integrals); routing policies never see it directly, only a snapshot built
from it, kept per model as the same :class:`~npucenter.policy.routing.ReplicaIndex` the twin
keeps (re-read one changed replica at a time). Replicas come and go as the executor starts and
restarts them (:meth:`UpstreamPool.set`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, KeysView, Mapping
from dataclasses import dataclass, field

from npucenter.clock import Clock
from npucenter.errors import InvalidConfigError
from npucenter.metering.attribution import ReplicaMeter
from npucenter.policy.routing import ReplicaIndex, ReplicaState, RoutingSnapshot

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
        "_board",
        "_down_until_s",
        "_engine_foreign",
        "_inflight",
        "_kv_usage_fraction",
        "_outstanding_tokens",
        "_position",
        "endpoint",
        "engine_running",
        "engine_waiting",
        "idle_power_w",
        "meter",
        "num_failures",
        "num_served",
        "url_chat",
        "url_completions",
    )

    def __init__(self, endpoint: ReplicaEndpoint, clock: Clock) -> None:
        self._board: _Board | None = None  # the routing index of the pool it is in
        self._position = 0  # its place in that index
        self.endpoint = endpoint
        base = endpoint.base_url.rstrip("/")
        self.url_chat = f"{base}/v1/chat/completions"
        self.url_completions = f"{base}/v1/completions"
        self._inflight = 0
        self._outstanding_tokens = 0
        self._kv_usage_fraction = 0.0
        self.engine_running = 0  # requests the engine says it runs (its own metrics)
        self.engine_waiting = 0  # requests queued inside the engine (its own metrics)
        self._engine_foreign = 0
        self.idle_power_w = endpoint.idle_power_w  # W, updated from the engine's metrics
        self._down_until_s = 0.0
        self.num_failures = 0
        self.num_served = 0
        self.meter = ReplicaMeter(tp=endpoint.tp, busy_power_w=endpoint.busy_power_w, clock=clock)

    @property
    def replica_id(self) -> str:
        """The replica's id."""
        return self.endpoint.replica_id

    # What routing sees: setting any of these marks the replica for its pool's routing index.
    @property
    def inflight(self) -> int:
        """Requests the gateway has sent it that have not finished."""
        return self._inflight

    @inflight.setter
    def inflight(self, value: int) -> None:
        self._inflight = value
        self._changed()

    @property
    def outstanding_tokens(self) -> int:
        """Estimated tokens (prompt + max output) of the requests in flight."""
        return self._outstanding_tokens

    @outstanding_tokens.setter
    def outstanding_tokens(self, value: int) -> None:
        self._outstanding_tokens = value
        self._changed()

    @property
    def kv_usage_fraction(self) -> float:
        """KV-cache use from the engine's metrics when scraped (0-1)."""
        return self._kv_usage_fraction

    @kv_usage_fraction.setter
    def kv_usage_fraction(self, value: float) -> None:
        self._kv_usage_fraction = value
        self._changed()

    @property
    def engine_foreign(self) -> int:
        """Requests in the engine the gateway did not send (at the last scrape)."""
        return self._engine_foreign

    @engine_foreign.setter
    def engine_foreign(self, value: int) -> None:
        self._engine_foreign = value
        self._changed()

    @property
    def down_until_s(self) -> float:
        """The end of its failure cool-down (clock time; 0: never failed)."""
        return self._down_until_s

    @down_until_s.setter
    def down_until_s(self, value: float) -> None:
        self._down_until_s = value
        self._changed()

    def _changed(self) -> None:
        board = self._board
        if board is not None:
            board.dirty.add(self._position)

    def routing_state(self, now_s: float) -> ReplicaState:
        """What a routing policy sees of it: healthy while up with a free slot."""
        endpoint = self.endpoint
        return ReplicaState(
            replica_id=endpoint.replica_id,
            model_id=endpoint.model_id,
            device_id=endpoint.device_id,
            device_kind=endpoint.device_kind,
            healthy=now_s >= self._down_until_s and self._inflight < endpoint.max_inflight,
            num_running=self._inflight,
            num_waiting=self._engine_foreign,  # an external server's other clients' requests
            outstanding_tokens=max(0, self._outstanding_tokens),
            kv_used_fraction=min(1.0, max(0.0, self._kv_usage_fraction)),
            max_num_seqs=endpoint.max_inflight,
        )

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
        self._boards: dict[str, _Board] = {}  # model id -> its replicas' routing index
        self._aliases: dict[str, str] = {}  # another name -> model id (a deployment's name)
        self.version = 0  # bumped when the served models or aliases may have changed
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
        for old_replica in self._replicas.values():
            old_replica._board = None
        self._replicas = replicas
        by_model: dict[str, list[Replica]] = {}
        for replica in replicas.values():
            by_model.setdefault(replica.endpoint.model_id, []).append(replica)
        self._by_model = by_model
        now_s = self._clock.now_s()
        self._boards = {model: _Board(group, now_s) for model, group in by_model.items()}
        self.version += 1

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

    def drain(self, replica_id: str) -> Replica | None:
        """Send no new request to ``replica_id`` (it is being scaled down): routing, the
        candidates and the count of replicas up leave it out; its requests in flight go on."""
        replica = self._replicas.get(replica_id)
        if replica is not None and not math.isinf(replica.down_until_s):
            replica.down_until_s = math.inf
        return replica

    def undrain(self, replica_id: str) -> None:
        """Route to a drained replica again (wanted again before its drain ended)."""
        replica = self._replicas.get(replica_id)
        if replica is not None and math.isinf(replica.down_until_s):
            replica.down_until_s = 0.0

    def now_s(self) -> float:
        """The pool's clock."""
        return self._clock.now_s()

    def set_aliases(self, aliases: Mapping[str, str]) -> None:
        """Other names tenants may ask for (alias -> model id, e.g. a deployment's name)."""
        self._aliases = {a: m for a, m in aliases.items() if a != m}
        self.version += 1

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

    def model_ids(self) -> KeysView[str]:
        """Models with at least one replica (a live view; no copy)."""
        return self._by_model.keys()

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

    def routing_snapshot(self, model_id: str) -> RoutingSnapshot | None:
        """The model's replicas as a routing policy sees them now, with their routing index
        (None when no replica serves the model). Healthy: up with a free slot."""
        board = self._boards.get(model_id)
        if board is None:
            return None
        now_s = self._clock.now_s()
        board.refresh(now_s)
        index = board.index
        return RoutingSnapshot(now_s=now_s, replicas=index.states, index=index)

    def num_free(self, model_id: str) -> int:
        """Replicas of ``model_id`` that are up with a free slot (constant time)."""
        board = self._boards.get(model_id)
        if board is None:
            return 0
        board.refresh(self._clock.now_s())
        return board.num_healthy

    def mark_failed(self, replica: Replica, cooldown_s: float) -> None:
        """Keep new requests off ``replica`` for ``cooldown_s`` (it failed a request)."""
        replica.num_failures += 1
        replica.down_until_s = max(replica.down_until_s, self._clock.now_s() + cooldown_s)


class _Board:
    """One model's replicas as a :class:`ReplicaIndex` kept current incrementally.

    NOTE(gateway): a replica marks itself dirty when a field routing reads changes; the board
    re-reads only those (and the replicas whose failure cool-down may have ended) before each
    routing decision, so a decision costs the same whatever the number of replicas.
    """

    __slots__ = ("dirty", "down", "index", "num_healthy", "replicas")

    def __init__(self, replicas: list[Replica], now_s: float) -> None:
        self.replicas = replicas
        states = [r.routing_state(now_s) for r in replicas]
        self.index = ReplicaIndex(states)
        self.num_healthy = sum(1 for state in states if state.healthy)
        self.dirty: set[int] = set()  # positions whose replica changed since the last refresh
        self.down = {pos for pos, r in enumerate(replicas) if not r.is_up(now_s)}
        for pos, replica in enumerate(replicas):
            replica._board, replica._position = self, pos

    def refresh(self, now_s: float) -> None:
        """Re-read the replicas that changed, and those whose cool-down is over."""
        if self.down:
            for pos in [p for p in self.down if self.replicas[p].is_up(now_s)]:
                self.down.discard(pos)
                self.dirty.add(pos)
        if not self.dirty:
            return
        index = self.index
        for pos in self.dirty:
            replica = self.replicas[pos]
            state = replica.routing_state(now_s)
            if state.healthy != index.states[pos].healthy:
                self.num_healthy += 1 if state.healthy else -1
            if not replica.is_up(now_s):
                self.down.add(pos)
            index.update(pos, state)
        self.dirty.clear()
