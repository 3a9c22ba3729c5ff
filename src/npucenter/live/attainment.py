"""Deployments' SLO attainment over a recent window, from the gateway's latency histograms.

The gateway keeps cumulative TTFT and TPOT histograms per served model (the ones the
autoscaler reads, :mod:`npucenter.live.load`). :class:`SloWindow` snapshots them every
``step_s`` (10 s) and keeps the snapshots of the last ``window_s`` (5 min): a deployment's
attainment is the requests counted since the newest snapshot at least ``window_s`` old (or since
the gateway started, when it is younger than that) whose TTFT was within the SLO, and those whose
TPOT was, each counted at the largest bucket edge not above the limit (a miss is never counted as
met), as the autoscaler counts them. ``fraction`` is the smaller of the two.

NOTE(console): the histograms are per served model, so deployments of one model (of several
tenants) share one figure, and the smaller of the two marginal fractions is an upper bound on
the share that met both (the histograms do not pair them). The SLO is the center's fleet file's
(``slos:``) for the service of that deployment, else for a service of the same model; a
deployment the fleet file names no SLO for has none (``None``). With several gateway processes on
one PostgreSQL, the others' published load rows (``load/<host>-<pid>``, each second) are counted
too, each gateway's counts apart: one that stops publishing takes its requests with it, and one
that starts within the window counts from zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from npucenter.fleet import Fleet
from npucenter.live.load import LOAD_PREFIX, TPOT_METRIC, TTFT_METRIC, _all_buckets, load_row_name
from npucenter.store import coordination
from npucenter.workload.slo import Slo

__all__ = ["SloWindow", "fleet_slos", "install_slo_attainment", "sample_slo_forever"]

#: Buckets of one model's two histograms: ``(ttft, tpot)``, each ``[[edge, cumulative], ...]``.
_Hists = tuple[list[list[Any]], list[list[Any]]]
#: What :attr:`SloWindow.read` returns: per gateway (``""``: this process's; others by their
#: load row's name), model -> its histograms.
_Sources = dict[str, dict[str, _Hists]]


class SloWindow:
    """Snapshots of a gateway's latency histograms; attainment over the last ``window_s``."""

    def __init__(
        self,
        read: Callable[[], _Sources],
        *,
        window_s: float = 300.0,
        step_s: float = 10.0,
        now_s: Callable[[], float] = time.monotonic,
        cache_s: float = 1.0,
    ) -> None:
        self.read = read  # gateway -> model -> its histograms now (cumulative since it started)
        self.window_s = window_s
        self.step_s = step_s
        self.cache_s = cache_s
        self.now_s = now_s
        self.started_s = now_s()
        self._snaps: list[tuple[float, _Sources]] = []
        # the histograms now, read once per ``cache_s`` at most: a list of many deployments
        # reads the registry once, not once per deployment
        self._now: tuple[float, _Sources] | None = None

    @classmethod
    def of_gateway(
        cls,
        gateway: Any,
        *,
        control: Any = None,
        own_row: str | None = None,
        stale_s: float = 5.0,
        **kw: Any,
    ) -> SloWindow:
        """This process's gateway, and on PostgreSQL the others' published load rows (younger
        than ``stale_s``) but ``own_row``: each gateway's counts are kept apart, so one that
        leaves takes its requests with it instead of looking like a reset."""

        own = own_row or load_row_name()  # what this process publishes (counted in process)

        def read() -> _Sources:
            registry = gateway.metrics.registry  # thread-safe (the API reads it off the loop)
            ttft, tpot = _all_buckets(registry, TTFT_METRIC), _all_buckets(registry, TPOT_METRIC)
            out = {"": {m: (ttft.get(m, []), tpot.get(m, [])) for m in {*ttft, *tpot}}}
            db = getattr(control, "db", None)
            if db is not None and coordination.is_postgres(getattr(db, "url", "")):
                rows = coordination.read_published_prefix(
                    db, LOAD_PREFIX, since_s=time.time() - stale_s
                )
                out.update((name, _models(doc)) for name, doc in rows if name != own)
            return out

        return cls(read, **kw)

    def sample(self) -> None:
        """Keep a snapshot now (at most one per ``step_s``); drop those no longer needed."""
        now = self.now_s()
        if self._snaps and now - self._snaps[-1][0] < self.step_s:
            return
        self._snaps.append((now, self.read()))
        # the newest snapshot at least window_s old is the baseline; older ones can go
        while len(self._snaps) > 1 and self._snaps[1][0] <= now - self.window_s:
            self._snaps.pop(0)

    def attainment(self, model: str, slo: Slo | None) -> dict[str, Any] | None:
        """The model's requests in the window against ``slo`` (None: no SLO, no figure)."""
        if slo is None or (math.isinf(slo.ttft_s) and math.isinf(slo.tpot_s)):
            return None
        now = self.now_s()
        base_s, base = self.started_s, None  # None: every count since each gateway started
        for t, snap in self._snaps:
            if t <= now - self.window_s:
                base_s, base = t, snap
        if self._now is None or not 0 <= now - self._now[0] < self.cache_s:
            self._now = (now, self.read())
        n = ttft_met = n_tpot = tpot_met = 0.0
        for source, models in self._now[1].items():  # a gateway new in the window: from zero
            ttft, tpot = models.get(model, ([], []))
            base_ttft, base_tpot = (base or {}).get(source, {}).get(model, ([], []))
            d_n, d_met = _delta(ttft, base_ttft, slo.ttft_s)
            d_n_tpot, d_tpot_met = _delta(tpot, base_tpot, slo.tpot_s)
            n, ttft_met = n + d_n, ttft_met + d_met
            n_tpot, tpot_met = n_tpot + d_n_tpot, tpot_met + d_tpot_met
        ttft_fraction = ttft_met / n if n > 0 else None
        tpot_fraction = tpot_met / n_tpot if n_tpot > 0 else None
        known = [f for f in (ttft_fraction, tpot_fraction) if f is not None]
        return {
            "slo": slo.name,
            "ttft_s": None if math.isinf(slo.ttft_s) else slo.ttft_s,
            "tpot_s": None if math.isinf(slo.tpot_s) else slo.tpot_s,
            "window_s": round(min(self.window_s, now - base_s), 3),
            "num_requests": int(n),
            "ttft_met_fraction": ttft_fraction,
            "tpot_met_fraction": tpot_fraction,
            "fraction": min(known) if known else None,
        }


def _models(load: dict[str, Any]) -> dict[str, _Hists]:
    """Model -> its histograms, from a gateway's published load row
    (:func:`npucenter.live.load.gateway_load`)."""
    return {
        m: (v.get("ttft", []), v.get("tpot", [])) for m, v in (load.get("models") or {}).items()
    }


def _count_within(buckets: list[list[Any]], limit_s: float) -> tuple[float, float]:
    """(observed, observed at or under the largest bucket edge <= ``limit_s``)."""
    total = float(buckets[-1][1]) if buckets else 0.0  # the +Inf bucket
    if math.isinf(limit_s):
        return total, total
    met = 0.0
    for edge, count in buckets:
        if float(edge) <= limit_s:
            met = max(met, float(count))
    return total, met


def _delta(now: list[list[Any]], before: list[list[Any]], limit_s: float) -> tuple[float, float]:
    n1, met1 = _count_within(now, limit_s)
    n0, met0 = _count_within(before, limit_s)
    if n1 < n0 or met1 < met0:  # the counts went down (a reset): count what there is now
        return n1, met1
    return n1 - n0, met1 - met0


def fleet_slos(fleet: Fleet, operator: str) -> Callable[[str, str, str], Slo | None]:
    """(tenant, deployment name, model) -> the SLO the fleet file gives it, or None
    (``operator``: the tenant of the file's services that name none)."""
    slos = {svc.name: svc.slo for svc in fleet.spec.services}
    by_deployment: dict[tuple[str, str], Slo] = {}
    by_model: dict[str, Slo] = {}
    for s in fleet.services:
        slo = slos.get(s.service or s.model_id)
        if slo is None or (math.isinf(slo.ttft_s) and math.isinf(slo.tpot_s)):  # "none"
            continue
        by_deployment[(s.tenant or operator, s.deployment_name)] = slo
        by_model.setdefault(s.model_id, slo)

    def slo_of(tenant: str, name: str, model: str) -> Slo | None:
        return by_deployment.get((tenant, name)) or by_model.get(model)

    return slo_of


def install_slo_attainment(control: Any, gateway: Any, fleet: Fleet, **kw: Any) -> SloWindow:
    """Give the API's deployment views (``control.slo_attainment``) ``gateway``'s attainment
    against ``fleet``'s SLOs; the caller samples the returned window (:func:`sample_slo_forever`)."""
    from npucenter.gateway.usage import OPERATOR_TENANT

    window = SloWindow.of_gateway(gateway, control=control, **kw)
    slo_of = fleet_slos(fleet, OPERATOR_TENANT)
    control.slo_attainment = lambda tenant, name, model: window.attainment(
        model, slo_of(tenant, name, model)
    )
    return window


@contextlib.asynccontextmanager
async def sample_slo_forever(window: SloWindow) -> AsyncIterator[None]:
    """Snapshot ``window``'s histograms every ``step_s`` while the context is open."""

    async def loop() -> None:
        while True:
            await asyncio.to_thread(window.sample)  # a database read with several gateways
            await asyncio.sleep(window.step_s)

    task = asyncio.create_task(loop(), name="slo-window")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
