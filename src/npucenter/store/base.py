"""What every aggregate store shares: one transaction, an injected clock, rates and the checks.

A store class wraps one SQLAlchemy ``Session`` (one transaction) and never commits; the caller's
``Database.session()`` block does. Validation that needs no stored state lives here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from npucenter.catalog import default_catalog
from npucenter.errors import InvalidConfigError
from npucenter.store.rates import CardRates

__all__ = [
    "MAX_ROW_ID",
    "StoreBase",
    "canonical_device",
    "check_choice",
    "check_name",
    "check_runs_on",
    "is_row_id",
]


#: The largest row id any backend stores (PostgreSQL ``integer``); a larger id names no row.
MAX_ROW_ID = 2**31 - 1
_Row = TypeVar("_Row")


class StoreBase:
    """Reads and writes of one transaction; ``now_s`` gives epoch seconds (injected).

    ``rates`` prices held cards on the ledger (energy from modelled power, cost from the
    center's tariff); by default energy is modelled and nothing is priced.
    """

    def __init__(
        self, session: Session, now_s: Callable[[], float], rates: CardRates | None = None
    ) -> None:
        self.session = session
        self.now_s = now_s
        self.rates = rates or CardRates()

    def row(self, model: type[_Row], row_id: Any) -> _Row | None:
        """The row of ``model`` with id ``row_id``; None for no row, or an id no row can have.

        Ids from a URL or a body are checked here so that ``99999999999999999999`` or ``true``
        is simply not found instead of overflowing the database driver.
        """
        if isinstance(row_id, bool) or not isinstance(row_id, int):
            return None
        if not 1 <= row_id <= MAX_ROW_ID:
            return None
        return self.session.get(model, row_id)


def is_row_id(ref: str) -> bool:
    """Whether a reference written as text is a row id (ASCII digits, at most 12) or a name."""
    return ref.isascii() and ref.isdigit() and len(ref) <= 12


def canonical_device(device_type: str) -> str:
    """The catalog id of a device type or alias; raises NotFoundError listing the valid ids."""
    if not isinstance(device_type, str) or not device_type.strip():
        raise InvalidConfigError("device_type", device_type, "must name a catalog device")
    return default_catalog().device(device_type).device_id


def check_runs_on(model: str, device_id: str, precision: str, tp: int) -> tuple[str, str]:
    """Check with the perf model that ``model`` runs on ``tp`` cards of the device.

    Returns the canonical (model id, precision). Raises ModelDoesNotFitError (with ``min_tp``),
    MissingFigureError, NotSupportedError or NotFoundError.
    """
    from npucenter.perf import build_perf_model

    if not 1 <= tp <= 64:
        raise InvalidConfigError("tp", tp, "must be between 1 and 64")
    catalog = default_catalog()
    model_id = catalog.model(model).model_id
    pm = build_perf_model(catalog, model=model_id, device=device_id, precision=precision, tp=tp)
    return model_id, str(getattr(pm.precision, "value", pm.precision))


def check_name(field: str, value: str) -> None:
    """Raise InvalidConfigError unless ``value`` is a 1-128 character name without outer spaces."""
    if (
        not isinstance(value, str)
        or not value.strip()
        or len(value) > 128
        or value != value.strip()
    ):
        raise InvalidConfigError(field, value, "must be 1-128 characters without outer spaces")


def check_choice(field: str, value: str, choices: Sequence[str]) -> None:
    """Raise InvalidConfigError listing ``choices`` unless ``value`` is one of them."""
    if value not in choices:
        raise InvalidConfigError(field, value, f"choose one of {', '.join(choices)}")
