"""LoRA adapters in the twin: which request names which adapter, where each one is loaded.

A service with an ``adapters:`` entry in the fleet file (:class:`~npucenter.fleet.adapters.AdapterMix`)
has each of its requests name an adapter by the shares given (seeded by the service's name, so a
run is reproducible; the rest name the base model). Such a request is routed by the service's
policy object with one prefix hash naming its adapter (:func:`adapter_block`, as the live
gateway does), so prefix affinity keeps an adapter's requests where it is loaded. On the replica
picked, an adapter not loaded there is loaded first, as the gateway's ``AdapterLoader`` does
before it forwards: the request reaches the engine ``load_s`` later (one load at a time per
replica; requests that find the load under way wait for it). A replica keeps what it loaded
(``max_loaded``: LRU, as vLLM's ``--max-cpu-loras``); one taken away (for a job, or scaled down
by the autoscaler) comes back empty.
The LoRA compute cost is the perf model's (:meth:`PerfModel.with_lora`).
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from npucenter.fleet.adapters import AdapterMix
from npucenter.perf.lora import ADAPTER_LOAD_S
from npucenter.policy.routing.prefix_affinity import adapter_block, prefix_block_hashes

__all__ = ["TwinAdapters", "adapter_load_s"]


def adapter_load_s(mix: AdapterMix, device_id: str) -> tuple[float, str]:
    """Seconds one load takes on ``device_id``'s engine, and where that figure comes from."""
    if mix.load_s is not None:
        return mix.load_s, "the fleet file (adapters.load_s)"
    figure = ADAPTER_LOAD_S.get(device_id)
    if figure is not None:
        return figure.seconds, figure.source
    return 0.0, f"no measured adapter load time for {device_id}: 0 s assumed (set adapters.load_s)"


class _Held:
    __slots__ = ("busy_until_s", "loaded")

    def __init__(self) -> None:
        self.loaded: OrderedDict[int, float] = OrderedDict()  # adapter -> ready at (LRU order)
        self.busy_until_s = 0.0  # the replica's last load ends then


class TwinAdapters:
    """One service's adapters during one run (per-request names, per-replica loads, counts)."""

    def __init__(
        self,
        service: str,
        mix: AdapterMix,
        service_of: npt.NDArray[np.int64],  # each request's service number in the trace
        service_number: int,
        replica_devices: dict[int, str],  # replica index -> device id, of this service
    ) -> None:
        self.service = service
        self.mix = mix
        names = mix.names
        shares = np.array([s for _, s in mix.shares], dtype=np.float64)
        rng = np.random.default_rng(zlib.crc32(service.encode()))
        draws = rng.random(len(service_of))
        labels = np.searchsorted(np.cumsum(shares), draws, side="right")
        labels[labels >= len(names)] = -1  # beyond the shares: the base model
        labels[service_of != service_number] = -1
        self.labels: list[int] = labels.tolist()
        self.hashes: list[tuple[int, ...]] = [prefix_block_hashes(adapter_block(n)) for n in names]
        self._load_s: dict[int, float] = {}
        self.load_sources: dict[str, str] = {}
        for index, device in replica_devices.items():
            seconds, source = adapter_load_s(mix, device)
            self._load_s[index] = seconds
            self.load_sources[device] = f"{seconds:g} s: {source}"
        self._held: dict[int, _Held] = {}
        self.requests = [0] * len(names)
        self.loads = [0] * len(names)
        self.evictions = 0
        self.wait_s = 0.0  # time requests spent waiting for their adapter's load

    def label(self, idx: int) -> int:
        """The adapter request ``idx`` names (-1: the base model)."""
        return self.labels[idx]

    def acquire(self, replica: int, adapter: int, t: float) -> float:
        """Request for ``adapter`` routed to ``replica`` at ``t``: when it can enter the engine."""
        self.requests[adapter] += 1
        held = self._held.setdefault(replica, _Held())
        ready = held.loaded.get(adapter)
        if ready is None:  # a miss: load it (after any load under way there)
            self.loads[adapter] += 1
            ready = max(t, held.busy_until_s) + self._load_s.get(replica, 0.0)
            held.busy_until_s = ready
            limit = self.mix.max_loaded
            while limit is not None and len(held.loaded) >= limit:
                held.loaded.popitem(last=False)
                self.evictions += 1
        held.loaded[adapter] = ready
        held.loaded.move_to_end(adapter)
        ready = max(t, ready)
        self.wait_s += ready - t
        return ready

    def forget(self, replica: int) -> None:
        """The replica's engine stopped: it holds no adapter when it comes back."""
        self._held.pop(replica, None)

    def summary(self) -> dict[str, Any]:
        """Requests, loads (misses) and hits per adapter, and where the load time came from."""
        names = self.mix.names
        loads, requests = sum(self.loads), sum(self.requests)
        return {
            "adapters": {
                n: {"requests": self.requests[k], "loads": self.loads[k]}
                for k, n in enumerate(names)
            },
            "requests": requests,
            "loads": loads,  # = misses: a request that found its adapter not loaded there
            "hits": requests - loads,
            "hit_rate": (requests - loads) / requests if requests else None,
            "evictions": self.evictions,
            "load_wait_s": self.wait_s,
            "load_s": dict(sorted(self.load_sources.items())),
            "lora": {
                "rank": self.mix.rank,
                "target_modules": list(self.mix.target_modules),
                "max_loras": self.mix.shape().max_loras,
            },
        }


def replica_devices(replicas: Sequence[Any], service: str) -> dict[int, str]:
    """Replica index -> device id of ``service``'s replicas (``SimReplica`` objects)."""
    return {r.index: r.device_id for r in replicas if r.service == service}
