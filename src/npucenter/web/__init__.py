"""The dashboard: server-rendered HTML at ``/`` (fleet, replicas, tenants' usage, charts).

No JavaScript framework and no CDN: HTML and inline SVG, refreshed every few seconds.
:mod:`npucenter.live.extension` adds it, with the gateway and the virtual fleet, to `npucenter up`.
"""

__all__: list[str] = []
