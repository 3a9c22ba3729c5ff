"""vLLM on NVIDIA GPUs: ``vllm serve MODEL --tensor-parallel-size N ...`` (docs/engines.md).

Cards are selected with ``CUDA_VISIBLE_DEVICES``; readiness is ``GET /health`` answering 200.
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
from npucenter.errors import NotSupportedError

__all__ = ["VllmEngine"]

# precision -> vLLM flags; fp8 quantises an unquantised checkpoint on the fly (an FP8
# checkpoint is detected by vLLM itself, the flag is then harmless).
_PRECISION_ARGS: dict[str, tuple[str, ...]] = {
    "bf16": ("--dtype", "bfloat16"),
    "fp16": ("--dtype", "float16"),
    "fp8": ("--quantization", "fp8"),
}


class VllmEngine:
    """vLLM's OpenAI-compatible server on CUDA GPUs."""

    name = "vllm"
    device_families: tuple[str, ...] = ("gpu",)
    ready_timeout_s = 900.0  # weights download + CUDA graph capture take minutes

    def launch_spec(self, spec: ReplicaSpec, *, host: str, port: int) -> LaunchSpec:
        """``vllm serve`` for ``spec`` with ``CUDA_VISIBLE_DEVICES`` set to its cards."""
        require_device_family(self, spec)
        argv: list[str] = ["vllm", "serve", spec.model_path or spec.model]
        argv += ["--host", host, "--port", str(port)]
        argv += ["--tensor-parallel-size", str(spec.tp)]
        argv += ["--served-model-name", spec.name_served]
        mem = spec.gpu_memory_utilization_fraction
        argv += option_args(
            ("--max-num-seqs", spec.max_num_seqs),
            ("--max-model-len", spec.max_model_len),
            ("--gpu-memory-utilization", None if mem is None else f"{mem:g}"),
        )
        argv += _precision_args(spec.precision)
        argv += spec.extra_args
        env = (("CUDA_VISIBLE_DEVICES", card_list(spec.cards)), *spec.env)
        return LaunchSpec(
            engine=self.name,
            argv=tuple(argv),
            env=env,
            host=host,
            port=port,
            health_path="/health",
            ready_timeout_s=self.ready_timeout_s,
            resources=(("GPU", float(spec.tp)),),
        )


def _precision_args(precision: str | None) -> tuple[str, ...]:
    if precision is None:
        return ()
    try:
        return _PRECISION_ARGS[precision.lower()]
    except KeyError:
        raise NotSupportedError(
            f"precision {precision} with vllm",
            f"npucenter maps only {', '.join(sorted(_PRECISION_ARGS))} to vLLM flags",
            hint="serve a pre-quantised checkpoint with --model-path and leave precision unset",
        ) from None


ENGINES.add("vllm", VllmEngine())
