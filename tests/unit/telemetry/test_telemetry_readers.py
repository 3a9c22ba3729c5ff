"""Telemetry parsers on recorded vendor outputs (tests/testdata/telemetry), NVML through a stand-in
module, and the virtual reader on a virtual engine's metrics."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from npucenter.errors import NotSupportedError, UpstreamError
from npucenter.telemetry import (
    TELEMETRY,
    FuriosaSmiTelemetry,
    NvmlTelemetry,
    RblnSmiTelemetry,
    Telemetry,
    VirtualTelemetry,
    discover_cards,
    parse_furiosa_smi_info,
    parse_rbln_smi,
    parse_virtual_metrics,
)
from npucenter.telemetry.nvml import NVML_INSTALL_HINT, gpu_device_type
from npucenter.telemetry.table import parse_quantity_gb

DATA = Path(__file__).parents[2] / "testdata" / "telemetry"


def _read(name: str) -> str:
    return (DATA / name).read_text()


def test_every_reader_satisfies_the_protocol() -> None:
    assert set(TELEMETRY.names()) >= {"nvml", "furiosa-smi", "rbln-smi", "virtual"}
    for _name, cls in TELEMETRY.items():
        assert isinstance(cls(), Telemetry)


def test_furiosa_smi_2025_with_pert_column() -> None:
    cards = parse_furiosa_smi_info(_read("furiosa_smi_info_2025.txt"))
    assert [c.index for c in cards] == [0, 1, 2]
    assert [c.power_w for c in cards] == [41.5, 36.0, 118.25]
    assert cards[2].temperature_c == 44.75
    assert cards[0].pci_bdf == "0000:17:00.0"
    assert {c.device_type for c in cards} == {"rngd"}
    assert cards[0].memory_gb == 48.0  # from the catalog's sourced RNGD figure


def test_furiosa_smi_2024_integer_watts() -> None:
    cards = parse_furiosa_smi_info(_read("furiosa_smi_info_2024.txt"))
    assert [(c.index, c.power_w) for c in cards] == [(4, 52.0), (5, 47.0)]


def test_rbln_smi_device_table_only() -> None:
    cards = parse_rbln_smi(_read("rbln_smi.txt"))
    assert [c.index for c in cards] == [0, 1, 2]  # the context table is not read as cards
    assert [c.power_w for c in cards] == [51.2, 6.4, 22.0]
    assert {c.device_type for c in cards} == {"atom"}
    assert cards[0].utilization_fraction == pytest.approx(0.875)
    assert cards[0].memory_used_gb == pytest.approx(6.5 * 2**30 / 1e9)
    assert cards[1].memory_gb == pytest.approx(15.7 * 2**30 / 1e9)
    assert cards[1].memory_used_gb == 0.0
    assert cards[2].name == "RBLN-CA22"


def test_rbln_stat_legacy_and_rebel() -> None:
    legacy = parse_rbln_smi(_read("rbln_stat_legacy.txt"))
    assert [(c.index, c.name, c.power_w) for c in legacy] == [(0, "RBLN-CA02", 6.0)]
    rebel = parse_rbln_smi(_read("rbln_smi_rebel.txt"))
    assert [c.device_type for c in rebel] == ["rebel", "rebel"]
    assert rebel[0].power_w == 180.5
    assert rebel[0].memory_used_gb == pytest.approx(70 * 2**30 / 1e9)


@pytest.mark.parametrize("text", ["garbage\nmore garbage", "+---+\n| a |\n+---+"])
def test_unparsable_output_is_an_upstream_error(text: str) -> None:
    with pytest.raises(UpstreamError):
        parse_rbln_smi(text)
    with pytest.raises(UpstreamError):
        parse_furiosa_smi_info(text)


@pytest.mark.parametrize(
    ("text", "gb"),
    [("15.7GiB", 15.7 * 2**30 / 1e9), ("0.0B", 0.0), ("512 MB", 0.512), ("2TB", 2000.0)],
)
def test_quantities(text: str, gb: float) -> None:
    assert parse_quantity_gb(text) == pytest.approx(gb)
    assert parse_quantity_gb("N/A") is None


async def test_cli_readers_with_injected_runner() -> None:
    async def furiosa(argv: list[str]) -> str:
        assert argv == ["furiosa-smi", "info"]
        return _read("furiosa_smi_info_2025.txt")

    samples = await FuriosaSmiTelemetry(runner=furiosa).sample()
    assert (samples[0].source_id, samples[0].power_w) == ("npu0", 41.5)

    async def rbln(argv: list[str]) -> str:
        return _read("rbln_smi.txt")

    samples = await RblnSmiTelemetry(runner=rbln).sample()
    assert sum(s.power_w for s in samples) == pytest.approx(79.6)


async def test_missing_tools_are_skipped_by_discovery(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setitem(sys.modules, "pynvml", None)
    with pytest.raises(NotSupportedError):
        await FuriosaSmiTelemetry().discover()
    with pytest.raises(NotSupportedError) as info:
        await NvmlTelemetry().discover()
    assert NVML_INSTALL_HINT in info.value.hint
    assert await discover_cards() == ()


class _FakeNvml:
    NVML_TEMPERATURE_GPU = 0

    class NVMLError(Exception):
        pass

    def __init__(self) -> None:
        self.inits = 0

    def nvmlInit(self) -> None:
        self.inits += 1

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetName(self, h: int) -> bytes:
        return b"NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:
        return SimpleNamespace(total=85_520_809_984, used=1_000_000_000)

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        return 312_500 if h == 0 else 70_250  # mW

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:
        return 55

    def nvmlDeviceGetUtilizationRates(self, h: int) -> Any:
        return SimpleNamespace(gpu=80)

    def nvmlDeviceGetPciInfo(self, h: int) -> Any:
        return SimpleNamespace(busId=b"00000000:18:00.0")

    def nvmlDeviceGetTotalEnergyConsumption(self, h: int) -> int:
        if h == 1:
            raise self.NVMLError("not supported")
        return 9_000_000  # mJ


async def test_nvml_reader_units() -> None:
    fake = _FakeNvml()
    reader = NvmlTelemetry(nvml=fake)
    cards = await reader.discover()
    assert [c.device_type for c in cards] == ["h100", "h100"]
    assert cards[0].power_w == 312.5 and cards[1].power_w == pytest.approx(70.25)
    assert cards[0].memory_gb == pytest.approx(85.520809984)
    assert cards[0].utilization_fraction == 0.8
    assert cards[0].pci_bdf == "00000000:18:00.0"
    samples = await reader.sample()
    assert samples[0].energy_j == 9000.0 and samples[1].energy_j is None
    assert fake.inits == 1


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("NVIDIA H100 80GB HBM3", "h100"),
        ("NVIDIA H200", "h200"),
        ("NVIDIA L40S", "l40s"),
        ("NVIDIA A100-SXM4-80GB", "a100"),
    ],
)
def test_gpu_device_type(name: str, kind: str) -> None:
    assert gpu_device_type(name) == kind


_METRICS = """\
# HELP npucenter:power_watts Modelled power of the replica's cards (W).
# TYPE npucenter:power_watts gauge
npucenter:power_watts{device="furiosa_rngd",model_name="m",tp="2"} 180.0
# HELP npucenter:energy_joules Modelled energy of the replica's cards (J).
# TYPE npucenter:energy_joules counter
npucenter:energy_joules_total{device="furiosa_rngd",model_name="m",tp="2"} 4321.5
"""


def test_parse_virtual_metrics() -> None:
    reading = parse_virtual_metrics(_METRICS)
    assert (reading.device, reading.tp, reading.power_w, reading.energy_j) == (
        "furiosa_rngd",
        2,
        180.0,
        4321.5,
    )
    with pytest.raises(UpstreamError):
        parse_virtual_metrics("# nothing here\n")


async def test_virtual_reader_over_http() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/metrics"
        return httpx.Response(200, text=_METRICS)

    reader = VirtualTelemetry(
        lambda: ["http://a:1", "http://b:2/"], transport=httpx.MockTransport(handler)
    )
    samples = await reader.sample()
    assert [s.source_id for s in samples] == ["http://a:1", "http://b:2"]
    assert all(s.energy_j == 4321.5 for s in samples)
    cards = await reader.discover()
    assert len(cards) == 4 and all(c.power_w == 90.0 for c in cards)
    assert [c.index for c in cards] == [0, 1, 2, 3]


async def test_virtual_reader_unreachable_engine() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    reader = VirtualTelemetry(["http://a:1"], transport=httpx.MockTransport(handler))
    with pytest.raises(UpstreamError):
        await reader.sample()
