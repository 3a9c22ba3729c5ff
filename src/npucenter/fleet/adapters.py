"""Adapters in a fleet file: which LoRA adapters a service's requests name, and how often.

```yaml
adapters:
  tiny-llama:                         # a service
    shares: {lab-a: 0.3, lab-b: 0.1}  # of its requests; the rest name the base model
    rank: 8                           # every adapter's (default 8)
    target_modules: [q_proj, v_proj]
    max_loras: 1                      # adapters one step may mix (vLLM --max-loras)
    max_loaded: 4                     # adapters a replica keeps loaded (LRU); default: all
    load_s: 0.05                      # one load; default: the engine's measured figure, else 0
```
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from npucenter.errors import InvalidConfigError
from npucenter.perf.lora import LoraShape

__all__ = ["AdapterMix", "adapter_mix_from_mapping"]

_KEYS = {"shares", "rank", "target_modules", "max_loras", "max_loaded", "load_s"}


@dataclass(frozen=True, slots=True, kw_only=True)
class AdapterMix:
    """The adapters a service's requests name (``shares``: adapter -> fraction of requests)."""

    shares: tuple[tuple[str, float], ...]
    rank: int = 8
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    max_loras: int = 1
    max_loaded: int | None = None  # None: a replica keeps every adapter it loaded (the gateway)
    load_s: float | None = None  # None: the engine's measured figure (perf.lora), else 0

    def __post_init__(self) -> None:
        if not self.shares:
            raise InvalidConfigError("adapters.shares", {}, "name at least one adapter")
        if any(not s >= 0 for _, s in self.shares) or sum(s for _, s in self.shares) > 1 + 1e-9:
            raise InvalidConfigError(
                "adapters.shares", dict(self.shares), "shares are >= 0 and add up to at most 1"
            )
        if self.max_loaded is not None and self.max_loaded < 1:
            raise InvalidConfigError("adapters.max_loaded", self.max_loaded, "must be >= 1")
        if self.load_s is not None and not self.load_s >= 0:
            raise InvalidConfigError("adapters.load_s", self.load_s, "must be >= 0")
        self.shape()  # rank, targets and max_loras checked there

    @property
    def names(self) -> tuple[str, ...]:
        """The adapters, in the file's order."""
        return tuple(name for name, _ in self.shares)

    def shape(self) -> LoraShape:
        """What the perf model charges a replica serving them."""
        return LoraShape(
            rank=self.rank,
            target_modules=self.target_modules,
            max_loras=min(self.max_loras, len(self.shares)),
        )


def adapter_mix_from_mapping(service: str, entry: Any) -> AdapterMix:
    """One service's ``adapters:`` entry (errors name the key)."""
    if not isinstance(entry, Mapping):
        raise InvalidConfigError(f"adapters.{service}", entry, "must be a mapping with shares")
    unknown = sorted(set(entry) - _KEYS)
    if unknown:
        raise InvalidConfigError(
            f"adapters.{service}", unknown, f"unknown keys; known: {sorted(_KEYS)}"
        )
    shares = entry.get("shares")
    if not isinstance(shares, Mapping):
        raise InvalidConfigError(f"adapters.{service}.shares", shares, "adapter -> share mapping")
    targets = entry.get("target_modules", ("q_proj", "v_proj"))
    if isinstance(targets, str):
        targets = (targets,)
    return AdapterMix(
        shares=tuple((str(k), float(v)) for k, v in shares.items()),
        rank=int(entry.get("rank", 8)),
        target_modules=tuple(str(t) for t in targets),
        max_loras=int(entry.get("max_loras", 1)),
        max_loaded=int(entry["max_loaded"]) if entry.get("max_loaded") is not None else None,
        load_s=float(entry["load_s"]) if entry.get("load_s") is not None else None,
    )
