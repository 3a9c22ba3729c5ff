"""How to launch the virtual engine: ``python -m npucenter.engines.virtual ...``.

Kept free of server imports so building a launch command stays cheap.
"""

from __future__ import annotations

import sys

from npucenter.engines.base import ENGINES, LaunchSpec, ReplicaSpec, option_args

__all__ = ["VirtualEngine"]


class VirtualEngine:
    """An OpenAI-compatible server that behaves like ``spec.device`` running ``spec.model``."""

    name = "virtual"
    device_families: tuple[str, ...] = ("any",)
    ready_timeout_s = 60.0

    def launch_spec(self, spec: ReplicaSpec, *, host: str, port: int) -> LaunchSpec:
        """A Python subprocess running the virtual engine with ``spec``'s settings."""
        argv: list[str] = [sys.executable, "-m", "npucenter.engines.virtual"]
        argv += ["--model", spec.model, "--device", spec.device, "--tp", str(spec.tp)]
        argv += ["--host", host, "--port", str(port)]
        argv += option_args(
            ("--precision", spec.precision),
            ("--time-scale", f"{spec.time_scale:g}"),
            ("--served-model-name", spec.served_model_name),
            ("--max-num-seqs", spec.max_num_seqs),
            ("--max-model-len", spec.max_model_len),
        )
        argv += spec.extra_args
        return LaunchSpec(
            engine=self.name,
            argv=tuple(argv),
            env=spec.env,
            host=host,
            port=port,
            health_path="/health",
            ready_timeout_s=spec.ready_timeout_s or self.ready_timeout_s,
            resources=(),
        )


ENGINES.add("virtual", VirtualEngine())
