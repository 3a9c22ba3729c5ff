"""NVIDIA GPUs through NVML (``pynvml``, from the ``nvidia-ml-py`` package), imported lazily.

Power is ``nvmlDeviceGetPowerUsage`` (mW), energy ``nvmlDeviceGetTotalEnergyConsumption`` (mJ
since the driver loaded; Volta and newer), memory ``nvmlDeviceGetMemoryInfo(...).total`` (bytes).
"""

from __future__ import annotations

import importlib
import re
from typing import Any

from npucenter.errors import NotSupportedError, UpstreamError
from npucenter.telemetry.base import TELEMETRY, DiscoveredCard, PowerSample

__all__ = ["NVML_INSTALL_HINT", "NvmlTelemetry", "gpu_device_type"]

NVML_INSTALL_HINT = "pip install nvidia-ml-py"


def gpu_device_type(name: str) -> str:
    """``"NVIDIA H100 80GB HBM3"`` -> ``"h100"``; the first model-like token, lower-cased."""
    for token in re.split(r"[\s-]+", name):
        if re.fullmatch(r"[A-Z]{1,3}[0-9]{2,4}[A-Z]?", token.upper()) and token.upper() != "NVIDIA":
            return token.lower()
    return name.lower().replace(" ", "_")


class NvmlTelemetry:
    """Reads NVIDIA GPUs with NVML; ``nvml`` may be a stand-in module (tests)."""

    name = "nvml"

    def __init__(self, *, nvml: Any = None) -> None:
        self._nvml = nvml
        self._initialised = False

    def _lib(self) -> Any:
        if self._nvml is None:
            try:
                self._nvml = importlib.import_module("pynvml")
            except ImportError:
                raise NotSupportedError(
                    "nvml telemetry", "pynvml is not installed", hint=NVML_INSTALL_HINT
                ) from None
        if not self._initialised:
            try:
                self._nvml.nvmlInit()
            except Exception as exc:  # NVMLError: no driver / no GPU
                raise NotSupportedError("nvml telemetry", f"NVML did not start: {exc}") from exc
            self._initialised = True
        return self._nvml

    async def discover(self) -> tuple[DiscoveredCard, ...]:
        """Every GPU NVML sees."""
        nv = self._lib()
        cards = []
        try:
            for i in range(nv.nvmlDeviceGetCount()):
                h = nv.nvmlDeviceGetHandleByIndex(i)
                name = _text(nv.nvmlDeviceGetName(h))
                mem = nv.nvmlDeviceGetMemoryInfo(h)
                cards.append(
                    DiscoveredCard(
                        device_type=gpu_device_type(name),
                        index=i,
                        name=name,
                        memory_gb=mem.total / 1e9,
                        memory_used_gb=mem.used / 1e9,
                        power_w=_optional(lambda h=h: nv.nvmlDeviceGetPowerUsage(h) / 1000.0),
                        temperature_c=_optional(
                            lambda h=h: float(
                                nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)
                            )
                        ),
                        utilization_fraction=_optional(
                            lambda h=h: nv.nvmlDeviceGetUtilizationRates(h).gpu / 100.0
                        ),
                        pci_bdf=_optional(lambda h=h: _text(nv.nvmlDeviceGetPciInfo(h).busId)),
                        source="nvml",
                    )
                )
        except NotSupportedError:
            raise
        except Exception as exc:
            raise UpstreamError(f"NVML query failed: {exc}") from exc
        return tuple(cards)

    async def sample(self) -> tuple[PowerSample, ...]:
        """Power and the energy counter of every GPU."""
        nv = self._lib()
        out = []
        try:
            for i in range(nv.nvmlDeviceGetCount()):
                h = nv.nvmlDeviceGetHandleByIndex(i)
                name = _text(nv.nvmlDeviceGetName(h))
                out.append(
                    PowerSample(
                        source_id=f"gpu{i}",
                        device_type=gpu_device_type(name),
                        power_w=nv.nvmlDeviceGetPowerUsage(h) / 1000.0,
                        energy_j=_optional(
                            lambda h=h: nv.nvmlDeviceGetTotalEnergyConsumption(h) / 1000.0
                        ),
                    )
                )
        except Exception as exc:
            raise UpstreamError(f"NVML query failed: {exc}") from exc
        return tuple(out)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _optional(read: Any) -> Any:
    try:
        return read()
    except Exception:  # NVMLError_NotSupported and friends: the field is just absent
        return None


TELEMETRY.add("nvml", NvmlTelemetry, aliases=("nvidia", "gpu"))
