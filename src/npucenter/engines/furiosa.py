"""furiosa-llm on FuriosaAI RNGD: ``furiosa-llm serve ARTIFACT --devices npu:0,...``.

The compiled artifact fixes the model's parallelism (``furiosa-llm build -tp/-pp``); the launch
chooses the cards with ``--devices``. Readiness is ``GET /v1/models`` answering 200, since the
furiosa-llm docs do not document a ``/health`` route (docs/engines.md).
"""

from __future__ import annotations

from npucenter.engines.base import ENGINES, LaunchSpec, ReplicaSpec, require_device_family
from npucenter.errors import NotSupportedError

__all__ = ["FuriosaLlmEngine", "furiosa_devices_arg"]


def furiosa_devices_arg(cards: tuple[int, ...]) -> str:
    """The ``--devices`` value for whole RNGD cards, e.g. ``npu:0,npu:1``."""
    return ",".join(f"npu:{i}" for i in cards)


class FuriosaLlmEngine:
    """FuriosaAI's OpenAI-compatible server on RNGD cards."""

    name = "furiosa-llm"
    device_families: tuple[str, ...] = ("rngd",)
    ready_timeout_s = 900.0  # loading a large artifact onto the cards takes minutes

    def launch_spec(self, spec: ReplicaSpec, *, host: str, port: int) -> LaunchSpec:
        """``furiosa-llm serve`` of the artifact on ``spec``'s cards."""
        require_device_family(self, spec)
        if spec.precision is not None and spec.precision.lower() not in ("fp8", "bf16"):
            raise NotSupportedError(
                f"precision {spec.precision} with furiosa-llm",
                "furiosa-llm serves compiled artifacts; their precision is fixed at build time",
                hint="build an FP8 or BF16 artifact with `furiosa-llm build` and pass --model-path",
            )
        argv: list[str] = ["furiosa-llm", "serve", spec.model_path or spec.model]
        argv += ["--host", host, "--port", str(port)]
        argv += ["--devices", furiosa_devices_arg(spec.cards)]
        argv += spec.extra_args
        return LaunchSpec(
            engine=self.name,
            argv=tuple(argv),
            env=spec.env,
            host=host,
            port=port,
            health_path="/v1/models",
            ready_timeout_s=spec.ready_timeout_s or self.ready_timeout_s,
            resources=(("FURIOSA", float(spec.tp)),),  # Ray's own name
        )


ENGINES.add("furiosa-llm", FuriosaLlmEngine(), aliases=("furiosa",))
