"""What telemetry is: discover the cards of a node and sample their power.

Readers hide one I/O seam each (NVML, ``furiosa-smi``, ``rbln-smi``, the virtual engines'
``/metrics``); their parsers are pure functions tested on recorded outputs.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from npucenter.errors import NotSupportedError, UpstreamError
from npucenter.registry import Registry

__all__ = [
    "TELEMETRY",
    "DiscoveredCard",
    "PowerSample",
    "Telemetry",
    "catalog_memory_gb",
    "run_tool",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class DiscoveredCard:
    """One accelerator card as a node reports it."""

    device_type: str  # lower-case family: "rngd", "atom", "rebel", "h100", ...
    index: int  # the vendor tool's index (npu0 -> 0, rbln3 -> 3, nvidia GPU index)
    name: str  # as the tool reports it, e.g. "RBLN-CA12", "NVIDIA H100 80GB HBM3"
    memory_gb: float | None = None  # total device memory (GB = 1e9 bytes)
    memory_used_gb: float | None = None
    power_w: float | None = None
    temperature_c: float | None = None
    utilization_fraction: float | None = None
    pci_bdf: str | None = None
    source: str = ""  # the reader: "nvml", "furiosa-smi", "rbln-smi", "virtual"


@dataclass(frozen=True, slots=True, kw_only=True)
class PowerSample:
    """Power now of one card (or one virtual replica), and its energy counter if it has one."""

    source_id: str  # "npu0", "rbln1", "gpu0", or a replica's base URL
    device_type: str
    power_w: float
    energy_j: float | None = None  # cumulative since the counter's origin


@runtime_checkable
class Telemetry(Protocol):
    """Discovers cards and samples their power."""

    name: str

    async def discover(self) -> tuple[DiscoveredCard, ...]:
        """The cards this reader sees (empty if none). Raises NotSupportedError if unusable."""
        ...

    async def sample(self) -> tuple[PowerSample, ...]:
        """Power of every card now."""
        ...


TELEMETRY: Registry[Any] = Registry("telemetry")  # name -> reader class


async def run_tool(argv: list[str], *, timeout_s: float = 10.0) -> str:
    """Run a vendor CLI and return its stdout; missing tool -> NotSupportedError."""
    if shutil.which(argv[0]) is None:
        raise NotSupportedError(
            f"{argv[0]} telemetry",
            f"{argv[0]} is not on PATH",
            hint=f"install the vendor driver package that ships {argv[0]}",
        )
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        raise UpstreamError(f"{' '.join(argv)} did not answer within {timeout_s:g} s") from None
    if proc.returncode != 0:
        raise UpstreamError(
            f"{' '.join(argv)} failed with code {proc.returncode}: "
            f"{err.decode(errors='replace').strip()[:300]}"
        )
    return out.decode(errors="replace")


def catalog_memory_gb(device_type: str) -> float | None:
    """The catalog's memory figure for a device type, or None if unknown or unsourced."""
    try:
        from npucenter.catalog import default_catalog

        value = default_catalog().device(device_type).memory_gb
    except Exception:  # unknown ids are not an error here: the figure is just absent
        return None
    return float(value) if value is not None else None
