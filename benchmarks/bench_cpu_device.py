"""The host CPU as a device: memory bandwidth and bf16 matmul rate, measured on this machine.

These are the ``cpu`` row of the catalog (devices.csv): figures measured here, never a vendor's.
Bandwidth is the best of several ``numpy.copyto`` passes over 256 MB (bytes read + written per
second); the bf16 rate is the best of several 1024x1024x1024 ``torch.matmul`` calls in bfloat16
(torch comes with the engine extra; without it the figure is left out). Run it with the interpreter
that has the engine installed, on an otherwise idle machine: the figures are of this machine.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

NUM_BYTES = 256 * 1024 * 1024
NUM_TRIES = 7
MATMUL_N = 1024


def copy_bandwidth_gbps() -> float:
    src = np.ones(NUM_BYTES // 8, dtype=np.float64)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(NUM_TRIES):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * NUM_BYTES / best / 1e9


def bf16_matmul_tflops() -> float | None:
    try:
        import torch
    except ImportError:
        return None
    a = torch.randn(MATMUL_N, MATMUL_N).to(torch.bfloat16)
    b = torch.randn(MATMUL_N, MATMUL_N).to(torch.bfloat16)
    torch.matmul(a, b)  # warm-up
    best = float("inf")
    for _ in range(NUM_TRIES):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * MATMUL_N**3 / best / 1e12


def main() -> None:
    bandwidth = copy_bandwidth_gbps()
    tflops = bf16_matmul_tflops()
    path = write_result(
        "cpu_device",
        {
            "memory_bandwidth_gbps": round(bandwidth, 2),
            "bf16_tflops": None if tflops is None else round(tflops, 3),
            "method": __doc__.strip().splitlines()[2],
        },
    )
    print(
        f"memory bandwidth {bandwidth:.1f} GB/s; bf16 matmul "
        f"{'n/a (no torch)' if tflops is None else f'{tflops:.3f} TFLOPS'} -> {path}"
    )


if __name__ == "__main__":
    main()
