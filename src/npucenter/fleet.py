"""The fleet: which servers of which devices the center has, and which model replicas run on them.

``npucenter up`` with no configuration runs :func:`default_fleet` as virtual engines; ``--fleet
FLEET.yaml`` reads the same shape from a file (:func:`load_fleet`). This module only parses and
validates (reading the one YAML file it is given); launching replicas is the executor's job.

Example ``FLEET.yaml``::

    name: lab
    servers:
      - {device: rngd, count: 2, cards_per_server: 8}
      - {device: h100, count: 1, cards_per_server: 8}
    services:
      - {model: llama-3.1-8b, device: rngd, precision: fp8, tp: 1, replicas_per_server: 2}
      - {model: llama-3.1-8b, device: h100, precision: fp8, tp: 1, replicas_per_server: 2}
    tariff_usd_per_device_hour: {rngd: 1.0, h100: 2.0}   # the center's own price list
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from npucenter.errors import InvalidConfigError, NotFoundError

__all__ = [
    "DEFAULT_MODEL",
    "Fleet",
    "PlacedReplica",
    "ServerGroup",
    "ServiceGroup",
    "default_fleet",
    "fleet_from_dict",
    "load_fleet",
]

DEFAULT_MODEL = "llama-3.1-8b"
_TOP_KEYS = {"name", "servers", "services", "tariff_usd_per_device_hour"}
# Keys of the simulator's fleet file (npucenter.sim.fleet), a superset of this one: accepted and
# ignored here, so one file serves `npucenter up` and `npucenter simulate`.
_SIM_TOP_KEYS = {
    "description", "slo", "slos", "routing", "traffic", "network_gb_per_s",
    "network_latency_s", "catalog",
}  # fmt: skip
_SERVICE_KEYS = {"model", "device", "precision", "tp", "replicas_per_server", "max_num_seqs"}
_SIM_SERVICE_KEYS = {
    "service", "role", "replicas", "max_num_batched_tokens", "block_size_tokens",
    "enable_chunked_prefill",
}  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerGroup:
    """``num_servers`` identical servers, each with ``cards_per_server`` cards of one device."""

    device_id: str  # catalog id or alias, e.g. "rngd", "h100"
    num_servers: int
    cards_per_server: int

    def __post_init__(self) -> None:
        if not self.device_id:
            raise InvalidConfigError("servers.device", self.device_id, "must name a device")
        if self.num_servers < 1:
            raise InvalidConfigError("servers.count", self.num_servers, "must be >= 1")
        if self.cards_per_server < 1:
            raise InvalidConfigError(
                "servers.cards_per_server", self.cards_per_server, "must be >= 1"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceGroup:
    """Replicas of one model on every server of one device group."""

    model_id: str
    device_id: str
    precision: str = "fp8"
    tp: int = 1  # cards per replica
    replicas_per_server: int = 1
    max_num_seqs: int = 64  # sequences a replica runs at once; more wait in the gateway

    def __post_init__(self) -> None:
        if not self.model_id:
            raise InvalidConfigError("services.model", self.model_id, "must name a model")
        if self.tp < 1:
            raise InvalidConfigError("services.tp", self.tp, "must be >= 1")
        if self.replicas_per_server < 1:
            raise InvalidConfigError(
                "services.replicas_per_server", self.replicas_per_server, "must be >= 1"
            )
        if self.max_num_seqs < 1:
            raise InvalidConfigError("services.max_num_seqs", self.max_num_seqs, "must be >= 1")


@dataclass(frozen=True, slots=True, kw_only=True)
class PlacedReplica:
    """One engine replica: a model on ``tp`` cards of one server."""

    replica_id: str  # e.g. "rngd-0-r1"
    model_id: str
    device_id: str
    precision: str
    tp: int
    server_id: str  # e.g. "rngd-0"
    card_ids: tuple[int, ...]  # card indices on that server
    max_num_seqs: int = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class Fleet:
    """Servers, the services placed on them, and the center's tariff."""

    name: str
    servers: tuple[ServerGroup, ...]
    services: tuple[ServiceGroup, ...]
    tariff_usd_per_device_hour: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.servers:
            raise InvalidConfigError("servers", [], "a fleet needs at least one server group")
        seen: set[str] = set()
        for group in self.servers:
            if group.device_id.lower() in seen:
                raise InvalidConfigError(
                    "servers.device", group.device_id, "listed twice; use one entry with count"
                )
            seen.add(group.device_id.lower())
        for device, price in self.tariff_usd_per_device_hour.items():
            if price < 0:
                raise InvalidConfigError(
                    f"tariff_usd_per_device_hour.{device}", price, "must be >= 0"
                )
        used: dict[str, int] = {}
        for service in self.services:
            group = self.server_group(service.device_id)
            used[group.device_id] = (
                used.get(group.device_id, 0) + service.tp * service.replicas_per_server
            )
            if used[group.device_id] > group.cards_per_server:
                raise InvalidConfigError(
                    "services",
                    service.model_id,
                    f"replicas need {used[group.device_id]} {group.device_id} cards per server "
                    f"but a server has {group.cards_per_server}",
                    hint="lower tp or replicas_per_server",
                )

    def server_group(self, device_id: str) -> ServerGroup:
        """The server group of ``device_id`` (case-insensitive)."""
        for group in self.servers:
            if group.device_id.lower() == device_id.lower():
                return group
        raise NotFoundError("fleet device", device_id, valid=[g.device_id for g in self.servers])

    @property
    def models(self) -> tuple[str, ...]:
        """Model ids served, in first-listed order."""
        return tuple(dict.fromkeys(s.model_id for s in self.services))

    @property
    def num_cards(self) -> int:
        """Cards in the fleet."""
        return sum(g.num_servers * g.cards_per_server for g in self.servers)

    def replicas(self) -> tuple[PlacedReplica, ...]:
        """Every replica, placed on consecutive free cards of each server."""
        out: list[PlacedReplica] = []
        for group in self.servers:
            for server in range(group.num_servers):
                server_id = f"{group.device_id}-{server}"
                next_card = 0
                for service in self.services:
                    if service.device_id.lower() != group.device_id.lower():
                        continue
                    for _ in range(service.replicas_per_server):
                        cards = tuple(range(next_card, next_card + service.tp))
                        next_card += service.tp
                        out.append(
                            PlacedReplica(
                                replica_id=f"{server_id}-r{cards[0]}",
                                model_id=service.model_id,
                                device_id=group.device_id,
                                precision=service.precision,
                                tp=service.tp,
                                server_id=server_id,
                                card_ids=cards,
                                max_num_seqs=service.max_num_seqs,
                            )
                        )
        return tuple(out)


def default_fleet(model_id: str = DEFAULT_MODEL) -> Fleet:
    """Two RNGD servers of 8 cards and one H100 server of 8, two replicas of ``model_id`` each.

    Two single-card replicas per server keep a laptop's process count small; the other cards are
    free for jobs. The tariff is an example price list of the center (not a device figure).
    """
    return Fleet(
        name="default",
        servers=(
            ServerGroup(device_id="rngd", num_servers=2, cards_per_server=8),
            ServerGroup(device_id="h100", num_servers=1, cards_per_server=8),
        ),
        services=(
            ServiceGroup(
                model_id=model_id, device_id="rngd", precision="fp8", replicas_per_server=2
            ),
            ServiceGroup(
                model_id=model_id, device_id="h100", precision="fp8", replicas_per_server=2
            ),
        ),
        tariff_usd_per_device_hour={"rngd": 1.0, "h100": 2.0},
    )


def fleet_from_dict(data: Mapping[str, Any]) -> Fleet:
    """A fleet from its YAML/JSON mapping (see the module docstring)."""
    if not isinstance(data, Mapping):
        raise InvalidConfigError("fleet", type(data).__name__, "must be a mapping")
    unknown = set(data) - _TOP_KEYS - _SIM_TOP_KEYS
    if unknown:
        raise InvalidConfigError("fleet", sorted(unknown), "unknown keys")
    try:
        servers = tuple(
            ServerGroup(
                device_id=str(s["device"]),
                num_servers=int(s.get("count", 1)),
                cards_per_server=int(s["cards_per_server"]),
            )
            for s in data.get("servers") or ()
        )
        services = tuple(_service(s) for s in data.get("services") or ())
        tariff = {
            str(k): float(v) for k, v in (data.get("tariff_usd_per_device_hour") or {}).items()
        }
    except KeyError as exc:
        raise InvalidConfigError("fleet", exc.args[0], "missing required key") from exc
    except (TypeError, ValueError, AttributeError) as exc:
        raise InvalidConfigError("fleet", str(exc), "malformed entry") from exc
    return Fleet(
        name=str(data.get("name", "fleet")),
        servers=servers,
        services=services,
        tariff_usd_per_device_hour=tariff,
    )


def _service(entry: Mapping[str, Any]) -> ServiceGroup:
    unknown = set(entry) - _SERVICE_KEYS - _SIM_SERVICE_KEYS
    if unknown:
        raise InvalidConfigError("services", sorted(unknown), "unknown keys")
    return ServiceGroup(
        model_id=str(entry["model"]),
        device_id=str(entry["device"]),
        precision=str(entry.get("precision") or "fp8"),
        tp=int(entry.get("tp", 1)),
        replicas_per_server=int(entry.get("replicas_per_server", 1)),
        max_num_seqs=int(entry.get("max_num_seqs", 64)),
    )


def load_fleet(path: str | Path) -> Fleet:
    """Read a fleet YAML file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise NotFoundError("fleet file", str(path)) from exc
    except yaml.YAMLError as exc:
        raise InvalidConfigError("fleet file", str(path), f"not valid YAML: {exc}") from exc
    return fleet_from_dict(data or {})
