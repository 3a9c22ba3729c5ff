"""Request streams as columns: arrival times and token counts, with service and tenant labels.

A :class:`Trace` is immutable (its arrays are read-only) and sorted by arrival. Transformations
(rate scaling, truncation, splitting across services/tenants, merging) return new traces and take
randomness only from an injected ``numpy.random.Generator``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from npucenter.errors import InvalidConfigError

__all__ = ["Trace", "merge_traces"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def _frozen(arr: npt.ArrayLike, dtype: type) -> npt.NDArray[np.generic]:
    out: npt.NDArray[np.generic] = np.array(arr, dtype=dtype, copy=True)
    out.setflags(write=False)
    return out


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class Trace:
    """``len(trace)`` requests: arrival (s from the trace start), prompt and output tokens.

    ``service_index[i]`` indexes ``service_names``; ``tenant_index[i]`` indexes ``tenant_names``.
    """

    name: str
    arrival_s: FloatArray
    prompt_tokens: IntArray
    output_tokens: IntArray
    service_index: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    service_names: tuple[str, ...] = ("default",)
    tenant_index: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    tenant_names: tuple[str, ...] = ("",)
    source: str = ""  # where the requests came from (file, citation, generator)

    def __post_init__(self) -> None:
        n = len(self.arrival_s)
        set_ = object.__setattr__
        set_(self, "arrival_s", _frozen(self.arrival_s, np.float64))
        set_(self, "prompt_tokens", _frozen(self.prompt_tokens, np.int64))
        set_(self, "output_tokens", _frozen(self.output_tokens, np.int64))
        for name in ("service_index", "tenant_index"):
            arr = getattr(self, name)
            set_(self, name, _frozen(np.zeros(n) if len(arr) == 0 else arr, np.int64))
        for name in ("prompt_tokens", "output_tokens", "service_index", "tenant_index"):
            if len(getattr(self, name)) != n:
                raise InvalidConfigError(name, len(getattr(self, name)), f"length must be {n}")
        if n:
            if not np.all(np.isfinite(self.arrival_s)) or self.arrival_s[0] < 0:
                raise InvalidConfigError("arrival_s", float(self.arrival_s[0]), "must be >= 0")
            if np.any(np.diff(self.arrival_s) < 0):
                raise InvalidConfigError("arrival_s", "unsorted", "must be non-decreasing")
            if self.prompt_tokens.min() < 1 or self.output_tokens.min() < 1:
                raise InvalidConfigError(
                    "tokens",
                    (int(self.prompt_tokens.min()), int(self.output_tokens.min())),
                    "prompt and output tokens must be >= 1",
                )
            if self.service_index.max() >= len(self.service_names) or self.service_index.min() < 0:
                raise InvalidConfigError("service_index", "out of range", "no such service")
            if self.tenant_index.max() >= len(self.tenant_names) or self.tenant_index.min() < 0:
                raise InvalidConfigError("tenant_index", "out of range", "no such tenant")

    def __len__(self) -> int:
        return len(self.arrival_s)

    @property
    def duration_s(self) -> float:
        """Time from the first to the last arrival."""
        return float(self.arrival_s[-1] - self.arrival_s[0]) if len(self) else 0.0

    @property
    def mean_rate_rps(self) -> float:
        """Requests per second over the trace's span (0 for fewer than two requests)."""
        return (len(self) - 1) / self.duration_s if self.duration_s > 0 else 0.0

    def _with(self, idx: npt.NDArray[np.int64] | slice, **changes: object) -> Trace:
        fields_: dict[str, object] = {
            "name": self.name,
            "arrival_s": self.arrival_s[idx],
            "prompt_tokens": self.prompt_tokens[idx],
            "output_tokens": self.output_tokens[idx],
            "service_index": self.service_index[idx],
            "service_names": self.service_names,
            "tenant_index": self.tenant_index[idx],
            "tenant_names": self.tenant_names,
            "source": self.source,
        }
        fields_.update(changes)
        return Trace(**fields_)  # type: ignore[arg-type]

    def scale_rate(self, factor: float) -> Trace:
        """Replay ``factor`` times faster (arrival gaps divided by ``factor``)."""
        if not factor > 0:
            raise InvalidConfigError("rate_scale", factor, "must be > 0")
        start = float(self.arrival_s[0]) if len(self) else 0.0
        return self._with(
            slice(None),
            arrival_s=start + (self.arrival_s - start) / factor,
            name=f"{self.name}x{factor:g}" if factor != 1 else self.name,
        )

    def rebase(self) -> Trace:
        """The same trace with the first arrival at t = 0."""
        start = float(self.arrival_s[0]) if len(self) else 0.0
        return self._with(slice(None), arrival_s=self.arrival_s - start)

    def head(self, num_requests: int) -> Trace:
        """The first ``num_requests`` requests."""
        if num_requests < 0:
            raise InvalidConfigError("num_requests", num_requests, "must be >= 0")
        return self._with(slice(0, num_requests))

    def window(self, start_s: float, end_s: float) -> Trace:
        """Requests arriving in ``[start_s, end_s)``."""
        lo, hi = np.searchsorted(self.arrival_s, [start_s, end_s], side="left")
        return self._with(slice(int(lo), int(hi)))

    def cap_tokens(self, max_prompt_tokens: int, max_output_tokens: int) -> Trace:
        """Clip prompt and output lengths (e.g. to a model's context)."""
        return self._with(
            slice(None),
            prompt_tokens=np.minimum(self.prompt_tokens, max_prompt_tokens),
            output_tokens=np.minimum(self.output_tokens, max_output_tokens),
        )

    def split(
        self,
        shares: Mapping[str, float],
        rng: np.random.Generator,
        *,
        by: str = "service",
    ) -> Trace:
        """Assign each request to a service (``by="service"``) or tenant at random by ``shares``.

        Shares are relative weights (normalised). The assignment is i.i.d. per request, so each
        label's stream is a thinned copy of the original (Poisson stays Poisson).
        """
        if by not in ("service", "tenant"):
            raise InvalidConfigError("by", by, "must be 'service' or 'tenant'")
        if not shares:
            raise InvalidConfigError("shares", {}, "give at least one name")
        weights = np.array([float(w) for w in shares.values()])
        if np.any(weights < 0) or weights.sum() <= 0:
            raise InvalidConfigError("shares", dict(shares), "weights must be >= 0, sum > 0")
        names = tuple(str(k) for k in shares)
        labels = rng.choice(len(names), size=len(self), p=weights / weights.sum())
        if by == "service":
            return self._with(slice(None), service_index=labels, service_names=names)
        return self._with(slice(None), tenant_index=labels, tenant_names=names)

    def for_service(self, name: str) -> Trace:
        """Only the requests of service ``name``."""
        if name not in self.service_names:
            raise InvalidConfigError("service", name, f"not in {list(self.service_names)}")
        idx = np.flatnonzero(self.service_index == self.service_names.index(name))
        return self._with(idx)


def merge_traces(traces: Sequence[Trace], *, name: str = "merged") -> Trace:
    """Interleave traces by arrival time; labels are unified by name (stable for equal times)."""
    if not traces:
        raise InvalidConfigError("traces", [], "give at least one trace")
    services: list[str] = []
    tenants: list[str] = []
    for tr in traces:
        services.extend(s for s in tr.service_names if s not in services)
        tenants.extend(t for t in tr.tenant_names if t not in tenants)
    s_idx = [
        np.array([services.index(s) for s in tr.service_names], dtype=np.int64)[tr.service_index]
        for tr in traces
    ]
    t_idx = [
        np.array([tenants.index(t) for t in tr.tenant_names], dtype=np.int64)[tr.tenant_index]
        for tr in traces
    ]
    arrival = np.concatenate([tr.arrival_s for tr in traces])
    order = np.argsort(arrival, kind="stable")
    return Trace(
        name=name,
        arrival_s=arrival[order],
        prompt_tokens=np.concatenate([tr.prompt_tokens for tr in traces])[order],
        output_tokens=np.concatenate([tr.output_tokens for tr in traces])[order],
        service_index=np.concatenate(s_idx)[order],
        service_names=tuple(services),
        tenant_index=np.concatenate(t_idx)[order],
        tenant_names=tuple(tenants),
        source="; ".join(dict.fromkeys(tr.source for tr in traces if tr.source)),
    )
