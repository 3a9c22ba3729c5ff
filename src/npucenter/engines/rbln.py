"""vllm-rbln on Rebellions ATOM/REBEL: ``vllm serve`` with the RBLN plug-in (docs/engines.md).

Cards are chosen with ``RBLN_DEVICES``; vLLM's ``--tensor-parallel-size`` must stay 1 on RBLN,
so the card count goes to ``VLLM_RBLN_TP_SIZE``. vllm-rbln requires ``--block-size``; npucenter
sets it to ``max_model_len`` (the plug-in's "naive attention" mode) unless extra args override.
"""

from __future__ import annotations

from npucenter.engines.base import (
    ENGINES,
    LaunchSpec,
    ReplicaSpec,
    card_list,
    option_args,
    require_device_family,
)
from npucenter.errors import InvalidConfigError

__all__ = ["VllmRblnEngine"]


class VllmRblnEngine:
    """vLLM with the vllm-rbln hardware plug-in on Rebellions NPUs."""

    name = "vllm-rbln"
    device_families: tuple[str, ...] = ("rbln",)
    ready_timeout_s = 1800.0  # the first start compiles the model for the NPU

    def launch_spec(self, spec: ReplicaSpec, *, host: str, port: int) -> LaunchSpec:
        """``vllm serve`` with ``RBLN_DEVICES`` and ``VLLM_RBLN_TP_SIZE`` set."""
        require_device_family(self, spec)
        if spec.max_model_len is None:
            raise InvalidConfigError(
                "max_model_len",
                None,
                "vllm-rbln needs max_model_len (its required --block-size is derived from it)",
                hint="set max_model_len, e.g. 4096",
            )
        argv: list[str] = ["vllm", "serve", spec.model_path or spec.model]
        argv += ["--host", host, "--port", str(port)]
        argv += ["--tensor-parallel-size", "1"]
        argv += ["--served-model-name", spec.name_served]
        argv += ["--max-model-len", str(spec.max_model_len)]
        if "--block-size" not in spec.extra_args:
            argv += ["--block-size", str(spec.max_model_len)]
        argv += option_args(("--max-num-seqs", spec.max_num_seqs))
        argv += spec.extra_args
        env = (
            ("RBLN_DEVICES", card_list(spec.cards)),
            ("VLLM_RBLN_TP_SIZE", str(spec.tp)),
            *spec.env,
        )
        return LaunchSpec(
            engine=self.name,
            argv=tuple(argv),
            env=env,
            host=host,
            port=port,
            health_path="/health",
            ready_timeout_s=spec.ready_timeout_s or self.ready_timeout_s,
            resources=(("RBLN", float(spec.tp)),),
        )


ENGINES.add("vllm-rbln", VllmRblnEngine(), aliases=("rbln",))
