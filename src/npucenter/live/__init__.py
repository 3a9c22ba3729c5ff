"""The live center's wiring: what ``npucenter up`` composes from the edges below it.

Above the control-plane API, the gateway and the dashboard (none of them imports another's
wiring): :mod:`~npucenter.live.gateway` wires the gateway to the store (API keys, token rates,
the usage ledger) and picks the fleet, :mod:`~npucenter.live.fleet` registers the fleet in the
store at start and serves its deployments, :mod:`~npucenter.live.extension` mounts the gateway,
``/metrics`` and the dashboard on the server app (the ``gateway`` server extension).
"""
