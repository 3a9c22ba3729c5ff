"""Shared builders for the planner tests: spec documents, candidates and allocations."""

from __future__ import annotations

import copy
from typing import Any

from npucenter.catalog import default_catalog
from npucenter.plan.milp import Allocation
from npucenter.plan.profile import Candidate

CAT = default_catalog()


def chat_spec(
    name: str,
    *,
    cap_w: float,
    rngd_cost: float,
    h100_cost: float,
    traffic: dict[str, Any],
    slo: dict[str, Any],
    cards_per_server: int | None = None,
    **top: Any,
) -> dict[str, Any]:
    """A spec document: RNGD and H100 servers, one ``chat`` service on llama-3.1-8b.

    ``top`` adds top-level keys (``gpu_jobs``, ``verification``, ...). A fresh copy each call.
    """
    per_server = {} if cards_per_server is None else {"cards_per_server": cards_per_server}
    return copy.deepcopy(
        {
            "name": name,
            "power": {"cap_w": cap_w, "price_usd_per_kwh": 0.1},
            "devices": [
                {"device": "rngd", "server_cost_usd_per_hour": rngd_cost, **per_server},
                {"device": "h100", "server_cost_usd_per_hour": h100_cost, **per_server},
            ],
            "services": [{"name": "chat", "model": "llama-3.1-8b", "traffic": traffic, "slo": slo}],
            **top,
        }
    )


def replica(device_id: str, *, service: str = "chat", tp: int = 1) -> Candidate:
    """A colocated FP8 replica candidate."""
    return Candidate(service=service, device_id=device_id, tp=tp, precision="fp8")


def h100_rngd_unit(decode_per_prefill: int, *, service: str = "chat") -> Candidate:
    """A disaggregated unit: one H100 prefill replica feeding RNGD decoders over 50 GB/s."""
    return Candidate(
        service=service,
        device_id="furiosa_rngd",
        tp=1,
        precision="fp8",
        prefill_device_id="nvidia_h100_sxm",
        decode_per_prefill=decode_per_prefill,
        kv_link_gbps=50.0,
    )


def allocation(replicas: dict[str, int]) -> Allocation:
    """An allocation holding only ``replicas`` (what the verifiers read)."""
    return Allocation(
        servers={},
        replicas=replicas,
        job_cards={},
        cards_used={},
        capacity_rps={},
        power_w=0.0,
        cost_usd_per_hour=0.0,
        npu_share=0.0,
        spare_cards={},
    )
