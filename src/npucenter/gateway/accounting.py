"""What every request costs: the budget settled, the metrics observed, one ledger row buffered.

:func:`finish` runs once per request whatever happened to it (answered, failed, cancelled,
refused); the rows wait in ``Gateway.pending_usage`` until the ticker writes them to the ledger.
With a durable ledger (one with ``record``), :func:`settle` journals a request's row before the
last bytes of its answer go out, and :func:`finish` journals the settled row.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from npucenter.gateway.call import Call
from npucenter.metering.ledger import UsageRecord, UsageTotals

if TYPE_CHECKING:
    from npucenter.gateway.app import Gateway

__all__ = [
    "finish",
    "sample_history",
    "settle",
    "stamp_tokens",
    "take_usage",
    "usage_record",
]

_ZERO = UsageTotals()


def take_usage(call: Call, usage: dict[str, Any]) -> None:
    """Record the engine's own token counts (its ``usage`` object)."""
    call.usage_seen = True
    call.input_tokens = int(usage.get("prompt_tokens") or 0)
    call.output_tokens = int(usage.get("completion_tokens") or 0)


def stamp_tokens(call: Call) -> None:
    """Without the engine's usage, count one output token per content event."""
    if not call.usage_seen:
        call.output_tokens = call.num_events


def finish(gw: Gateway, call: Call) -> None:
    """Reconcile the budget, observe metrics and buffer the ledger row (every request)."""
    ok = call.status == "ok"
    if call.status == "cancelled" and not call.usage_seen:
        call.output_tokens = call.num_events
    # A failed request is the center's fault: it is metered (device time, energy) but free;
    # so is one whose client left before its first token. A client that leaves mid-stream
    # pays for the prompt and the tokens it was sent.
    free = call.status == "error" or (
        call.status == "cancelled" and call.first_token_s is None and not call.usage_seen
    )
    billed_in = 0 if free else call.input_tokens
    billed_out = 0 if free else call.output_tokens
    if call.reservation is not None:
        gw.budgets.reconcile(call.reservation, billed_in + billed_out)
    principal = call.principal
    tenant = principal.tenant if principal else "-"
    model = call.model_id or "-"
    end_s = gw.clock.now_s()
    m = gw.metrics
    m.requests.labels(model, tenant, call.endpoint, call.status).inc()
    if billed_in or billed_out:
        m.tokens.labels(model, tenant, "input").inc(billed_in)
        m.tokens.labels(model, tenant, "output").inc(billed_out)
    if ok and call.model_id:
        m.e2e.labels(model).observe(end_s - call.started_s)
        if call.first_token_s is not None:
            m.ttft.labels(model).observe(call.first_token_s - call.started_s)
            if call.last_token_s is not None and call.output_tokens > 1:
                m.tpot.labels(model).observe(
                    (call.last_token_s - call.first_token_s) / (call.output_tokens - 1)
                )
    if principal is None:
        return  # unauthenticated: nobody to charge (counted in the metrics above)
    record = call.settled
    if record is None or record.status != call.status:  # else the row journaled as final
        record = usage_record(gw, call, billed_in, billed_out, end_s)
    if gw.journal is not None and not call.journaled:
        gw.journal(record, final=True)
    gw.pending_usage.append(record)
    key = (record.tenant, model)
    gw.usage_totals[key] = gw.usage_totals.get(key, _ZERO).plus(record)


def settle(gw: Gateway, call: Call, *, final: bool) -> None:
    """Journal the request's ledger row before its last bytes go out (a durable ledger only).

    ``final``: the row is complete (unary: device time is known); else a reservation with the
    tokens sent, which the row :func:`finish` journals settles.
    """
    if gw.journal is None or call.principal is None or call.journaled:
        return
    row = usage_record(gw, call, call.input_tokens, call.output_tokens, gw.clock.now_s())
    gw.journal(row, final=final)
    call.journaled = final
    if final:
        call.settled = row


def usage_record(
    gw: Gateway, call: Call, billed_in: int, billed_out: int, end_s: float
) -> UsageRecord:
    """The ledger row of ``call`` with what it is billed."""
    principal = call.principal
    assert principal is not None
    model = call.model_id or "-"
    return UsageRecord(
        request_id=call.request_id,
        tenant=principal.tenant,
        key_id=principal.key_id,
        service=call.adapter.service if call.adapter is not None else model,
        endpoint=call.endpoint,
        replica_id=call.replica.replica_id if call.replica else "",
        device_id=call.device_id,
        status=call.status,
        input_tokens=billed_in,
        output_tokens=billed_out,
        device_s=call.device_s,
        energy_j=call.energy_j,
        cost_usd=gw.prices.cost_usd(call.device_id, call.device_s),
        started_at_s=call.started_wall_s,
        duration_s=max(0.0, end_s - call.started_s),
    )


def sample_history(gw: Gateway) -> None:
    """Append one (Unix time, requests answered, output tokens) sample, at most one a second."""
    wall_s = time.time()
    if gw.history and wall_s - gw.history[-1][0] < 1.0:
        return
    totals = gw.usage_totals.values()
    gw.history.append(
        (wall_s, sum(t.num_requests for t in totals), sum(t.output_tokens for t in totals))
    )
