"""A small named registry for pluggable parts (engines, telemetry, executors, policies).

A duplicate name raises at registration; an unknown name raises :class:`UnknownPluginError`
listing the valid names. Lookup ignores case.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from npucenter.errors import UnknownPluginError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Names to plug-ins of one kind; e.g. ``ROUTING_POLICIES = Registry[type]("routing policy")``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str, *, aliases: tuple[str, ...] = ()) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name`` (and ``aliases``)."""

        def decorate(obj: T) -> T:
            self.add(name, obj, aliases=aliases)
            return obj

        return decorate

    def add(self, name: str, obj: T, *, aliases: tuple[str, ...] = ()) -> None:
        """Register ``obj`` under ``name``; raises ValueError on a duplicate name."""
        key = name.lower()
        for taken in (key, *(a.lower() for a in aliases)):
            if taken in self._entries or taken in self._aliases:
                raise ValueError(f"duplicate {self.kind} name or alias {taken!r}")
        self._entries[key] = obj
        for alias in aliases:
            self._aliases[alias.lower()] = key

    def get(self, name: str) -> T:
        """The entry named ``name`` or one of its aliases (case-insensitive)."""
        key = name.lower()
        key = self._aliases.get(key, key)
        try:
            return self._entries[key]
        except KeyError:
            raise UnknownPluginError(self.kind, name, valid=self.names()) from None

    def names(self) -> list[str]:
        """Registered names (no aliases), sorted."""
        return sorted(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        """(name, entry) pairs, sorted by name."""
        for name in self.names():
            yield name, self._entries[name]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = name.lower()
        return key in self._entries or key in self._aliases

    def __len__(self) -> int:
        return len(self._entries)
