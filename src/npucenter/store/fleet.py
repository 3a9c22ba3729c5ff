"""The fleet as stored: servers, their cards and health, and which cards are allocated.

A card has at most one allocation; a server with allocated cards cannot be removed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import selectinload

from npucenter.errors import ConflictError, InvalidConfigError, NotFoundError
from npucenter.store.base import StoreBase, canonical_device, check_choice, check_name, is_row_id
from npucenter.store.models import Allocation, CardRow, Job, ReplicaRow, ServerRow

__all__ = ["HEALTH_STATES", "FleetStore"]

HEALTH_STATES = ("healthy", "degraded", "down")


class FleetStore(StoreBase):
    """Servers, cards and allocations."""

    def create_server(
        self, name: str, device_type: str, num_cards: int, labels: dict[str, Any] | None = None
    ) -> ServerRow:
        """Register a server with ``num_cards`` cards of a catalog device type."""
        check_name("server name", name)
        device_id = canonical_device(device_type)
        if not 1 <= num_cards <= 64:
            raise InvalidConfigError("num_cards", num_cards, "must be between 1 and 64")
        if self.session.scalar(select(ServerRow).where(ServerRow.name == name)) is not None:
            raise ConflictError(f"server {name!r} exists already", details={"name": name})
        server = ServerRow(
            name=name, device_type=device_id, labels=dict(labels or {}), created_at_s=self.now_s()
        )
        server.cards = [CardRow(index=i, device_type=device_id) for i in range(num_cards)]
        self.session.add(server)
        self.session.flush()
        return server

    def list_servers(self) -> list[ServerRow]:
        """Every server with its cards."""
        stmt = select(ServerRow).order_by(ServerRow.id).options(selectinload(ServerRow.cards))
        return list(self.session.scalars(stmt))

    def get_server(self, ref: str | int) -> ServerRow:
        """A server by id or name."""
        if isinstance(ref, int) or is_row_id(str(ref)):
            server = self.row(ServerRow, int(ref))
        else:
            server = self.session.scalar(select(ServerRow).where(ServerRow.name == ref))
        if server is None:
            raise NotFoundError("server", str(ref))
        return server

    def set_health(
        self, server: ServerRow, health: str, card_index: int | None = None
    ) -> ServerRow:
        """Set a server's (or one card's) health; ``down`` cards take no new work."""
        check_choice("health", health, HEALTH_STATES)
        if card_index is None:
            server.health = health
            for card in server.cards:
                card.health = health
        else:
            cards = [c for c in server.cards if c.index == card_index]
            if not cards:
                raise NotFoundError("card", f"{server.name}/{card_index}")
            cards[0].health = health
        return server

    def delete_server(self, server: ServerRow) -> None:
        """Remove a server; refused while any of its cards is allocated."""
        card_ids = [c.id for c in server.cards]
        if card_ids and self.session.scalar(
            select(func.count(Allocation.id)).where(Allocation.card_id.in_(card_ids))
        ):
            raise ConflictError(
                f"server {server.name!r} has allocated cards",
                hint="drain it first (set its health to down and stop its workloads)",
            )
        self.session.execute(update(Job).where(Job.server_id == server.id).values(server_id=None))
        self.session.execute(
            update(ReplicaRow).where(ReplicaRow.server_id == server.id).values(server_id=None)
        )
        self.session.delete(server)

    def cards_in_use(self) -> dict[tuple[int, str], tuple[int, int]]:
        """(tenant id, device type) -> (cards held, of which borrowed)."""
        stmt = (
            select(Allocation.tenant_id, CardRow.device_type, Allocation.borrowed, func.count())
            .join(CardRow, CardRow.id == Allocation.card_id)
            .group_by(Allocation.tenant_id, CardRow.device_type, Allocation.borrowed)
        )
        out: dict[tuple[int, str], tuple[int, int]] = {}
        for tenant_id, device_type, borrowed, count in self.session.execute(stmt):
            used, lent = out.get((tenant_id, device_type), (0, 0))
            out[(tenant_id, device_type)] = (used + count, lent + (count if borrowed else 0))
        return out

    def allocations(self) -> list[Allocation]:
        """Every current card allocation."""
        return list(self.session.scalars(select(Allocation).order_by(Allocation.id)))

    def _cards(self, card_ids: Sequence[int]) -> list[CardRow]:
        cards = [self.row(CardRow, cid) for cid in card_ids]
        if not cards or any(c is None for c in cards):
            raise NotFoundError("card", ",".join(map(str, card_ids)))
        return [c for c in cards if c is not None]
