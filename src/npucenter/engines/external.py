"""An external engine: an OpenAI-compatible server the center reaches but does not start.

A vendor's furiosa-llm box or a team's vLLM: the deployment reconciler health-checks it
(``GET /health``, falling back to ``/v1/models``) and publishes it to the gateway once its
``/v1/models`` lists the served name; nothing is launched, so :meth:`launch_spec` refuses.
"""

from __future__ import annotations

from npucenter.engines.base import ENGINES, LaunchSpec, ReplicaSpec
from npucenter.errors import NotSupportedError

__all__ = ["ExternalEngine"]


class ExternalEngine:
    """A server that already runs elsewhere (``engine: {name: external, base_url: ...}``)."""

    name = "external"
    device_families: tuple[str, ...] = ("any",)
    ready_timeout_s = 30.0

    def launch_spec(self, spec: ReplicaSpec, *, host: str, port: int) -> LaunchSpec:
        """Always raises: the center does not start an external server."""
        raise NotSupportedError(
            f"launching engine external for {spec.model}",
            "an external server runs outside the center; it is reached at its base_url",
            hint="start the server yourself and name it in the fleet file's engine.base_url",
        )


ENGINES.add("external", ExternalEngine())
