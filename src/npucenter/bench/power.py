"""Where the target's power comes from (pluggable) and the sampler that turns it into energy.

Sources are registered in :data:`POWER_SOURCES`: ``none``, ``prometheus`` (a ``/metrics`` page
with a ``*power_watts`` gauge and/or a ``*energy_joules_total`` counter, as the virtual engine and
the gateway expose) and ``constant`` (a declared wattage, reported as an assumption). Energy comes
from the counter's difference when the page has one, else from integrating sampled power.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from npucenter.errors import InvalidConfigError
from npucenter.registry import Registry

__all__ = [
    "POWER_SOURCES",
    "ConstantPower",
    "EnergyReport",
    "NoPower",
    "PowerReading",
    "PowerSampler",
    "PowerSource",
    "PrometheusPower",
    "make_power_source",
    "parse_prometheus",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class PowerReading:
    """One reading: instantaneous power and/or a cumulative energy counter."""

    power_w: float | None = None
    energy_j: float | None = None


class PowerSource(Protocol):
    """Something that can tell the target's power now."""

    name: str

    async def read(self, client: httpx.AsyncClient) -> PowerReading | None: ...


#: name -> factory(option, endpoint root URL) -> PowerSource
POWER_SOURCES: Registry[Callable[[str | None, str], PowerSource]] = Registry("power source")


@dataclass(frozen=True, slots=True, kw_only=True)
class EnergyReport:
    """Energy drawn during a run window."""

    source: str
    method: str  # counter | integrated | constant
    energy_j: float
    mean_power_w: float
    window_s: float
    num_samples: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-able report."""
        return {
            "source": self.source,
            "method": self.method,
            "energy_j": self.energy_j,
            "mean_power_w": self.mean_power_w,
            "window_s": self.window_s,
            "num_samples": self.num_samples,
        }


class NoPower:
    """No power is readable."""

    name = "none"

    async def read(self, client: httpx.AsyncClient) -> PowerReading | None:
        return None


@dataclass(slots=True)
class ConstantPower:
    """A declared constant wattage (e.g. a nameplate); results mark it as an assumption."""

    power_w: float
    name: str = "constant"

    async def read(self, client: httpx.AsyncClient) -> PowerReading | None:
        return PowerReading(power_w=self.power_w)


@dataclass(slots=True)
class PrometheusPower:
    """Scrape a Prometheus text page; sum every series of the power gauge / energy counter.

    Without explicit names, the virtual engine's ``npucenter:power_w`` / ``npucenter:energy_j_total``
    are used when present, else the first metric whose name ends in a power / energy suffix
    (``power_w``, ``power_watts`` / ``energy_j_total``, ``energy_joules_total``), idle gauges aside.
    """

    url: str
    power_metric: str | None = None
    energy_metric: str | None = None
    name: str = "prometheus"

    async def read(self, client: httpx.AsyncClient) -> PowerReading | None:
        try:
            resp = await client.get(self.url, timeout=5.0)
        except httpx.HTTPError:
            return None
        if resp.status_code != 200:
            return None
        samples = parse_prometheus(resp.text)
        power = _pick(samples, self.power_metric, _POWER_NAMES, _POWER_SUFFIXES)
        energy = _pick(samples, self.energy_metric, _ENERGY_NAMES, _ENERGY_SUFFIXES)
        if power is None and energy is None:
            return None
        return PowerReading(power_w=power, energy_j=energy)


@dataclass
class PowerSampler:
    """Polls a source every ``interval_s`` while a run lasts."""

    source: PowerSource
    client: httpx.AsyncClient
    interval_s: float = 0.5
    _samples: list[tuple[float, PowerReading]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    async def start(self) -> bool:
        """Take the first reading; False (and no sampling) when the source gives nothing."""
        first = await self.source.read(self.client)
        if first is None:
            return False
        self._samples.append((time.perf_counter(), first))
        self._task = asyncio.create_task(self._loop())
        return True

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            reading = await self.source.read(self.client)
            if reading is not None:
                self._samples.append((time.perf_counter(), reading))

    async def stop(self) -> EnergyReport | None:
        """Take a last reading and compute the window's energy."""
        if self._task is None:
            return None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        last = await self.source.read(self.client)
        if last is not None:
            self._samples.append((time.perf_counter(), last))
        return _energy(self.source.name, self._samples)


def make_power_source(spec: str, root_url: str) -> PowerSource:
    """Build a source from a CLI spec: ``none``, ``prometheus[=URL]``, ``constant=W``, ``auto``.

    ``auto`` means the endpoint's own ``/metrics`` page (silently nothing if it has no power).
    """
    name, _, option = spec.partition("=")
    if name.lower() == "auto":
        name, option = "prometheus", ""
    factory = POWER_SOURCES.get(name)
    return factory(option or None, root_url)


def parse_prometheus(text: str) -> dict[str, float]:
    """``metric name -> sum over its series`` from Prometheus text exposition."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] == "#":
            continue
        if "}" in line:
            close = line.rindex("}")
            name, rest = line[: line.index("{")], line[close + 1 :].split()
        else:
            name, *rest = line.split()
        if not rest:
            continue
        try:
            value = float(rest[0])  # a trailing timestamp, if any, is rest[1]
        except ValueError:
            continue
        out[name] = out.get(name, 0.0) + value
    return out


_POWER_NAMES = ("npucenter:power_w", "npucenter_power_watts")
_POWER_SUFFIXES = ("power_w", "power_watts")
_ENERGY_NAMES = ("npucenter:energy_j_total", "npucenter_energy_joules_total")
_ENERGY_SUFFIXES = ("energy_j_total", "energy_joules_total")


def _pick(
    samples: dict[str, float],
    explicit: str | None,
    names: tuple[str, ...],
    suffixes: tuple[str, ...],
) -> float | None:
    if explicit:
        return samples.get(explicit)
    for name in names:
        if name in samples:
            return samples[name]
    for name in sorted(samples):
        if name.endswith(suffixes) and "idle" not in name:
            return samples[name]
    return None


def _energy(source: str, samples: list[tuple[float, PowerReading]]) -> EnergyReport | None:
    if len(samples) < 2:
        return None
    window_s = samples[-1][0] - samples[0][0]
    if window_s <= 0:
        return None
    e0, e1 = samples[0][1].energy_j, samples[-1][1].energy_j
    if e0 is not None and e1 is not None and e1 >= e0:
        energy_j, method = e1 - e0, "counter"
    else:
        pts = [(t, r.power_w) for t, r in samples if r.power_w is not None]
        if len(pts) < 2:
            return None
        energy_j = sum((t2 - t1) * (p1 + p2) / 2 for (t1, p1), (t2, p2) in itertools.pairwise(pts))
        method = "constant" if source == "constant" else "integrated"
    return EnergyReport(
        source=source,
        method=method,
        energy_j=energy_j,
        mean_power_w=energy_j / window_s,
        window_s=window_s,
        num_samples=len(samples),
    )


def _none(option: str | None, root_url: str) -> PowerSource:
    return NoPower()


def _prometheus(option: str | None, root_url: str) -> PowerSource:
    return PrometheusPower(url=option or root_url.rstrip("/") + "/metrics")


def _constant(option: str | None, root_url: str) -> PowerSource:
    try:
        watts = float(option or "")
    except ValueError:
        raise InvalidConfigError("power", option, "constant needs watts: constant=350") from None
    if watts <= 0:
        raise InvalidConfigError("power", watts, "must be > 0 W")
    return ConstantPower(power_w=watts)


POWER_SOURCES.add("none", _none, aliases=("off",))
POWER_SOURCES.add("prometheus", _prometheus, aliases=("metrics",))
POWER_SOURCES.add("constant", _constant)
