"""The catalog: every device and model npucenter knows, from package data plus user overrides.

Package data is read once (it is part of the program, not I/O of the running center); user
catalog documents arrive already parsed (``npucenter.files.catalog`` reads them at the edge).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from functools import cache
from importlib import resources
from typing import Any

from npucenter.catalog.device import Device
from npucenter.catalog.model import Model
from npucenter.catalog.precision import Precision
from npucenter.errors import InvalidConfigError, NotFoundError

__all__ = [
    "MEASUREMENT_COLUMNS",
    "Catalog",
    "Measurement",
    "default_catalog",
    "package_text",
    "parse_measurements",
]

# The columns of measurements.csv (a validation file must have them all; notes may be empty).
MEASUREMENT_COLUMNS = (
    "device_id",
    "num_devices",
    "model",
    "precision",
    "engine",
    "scenario",
    "input_tokens",
    "output_tokens",
    "batch_or_concurrency",
    "metric",
    "value",
    "unit",
    "source_url",
    "notes",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Measurement:
    """One published serving measurement (a row of measurements.csv)."""

    device_id: str
    num_devices: int
    model_name: str
    precision: str
    engine: str
    scenario: str
    input_tokens: int | None
    output_tokens: int | None
    batch: int | None  # None = "max (offline)" or not stated
    metric: str
    value: float
    unit: str
    source_url: str
    notes: str
    target_qps: float | None = None  # a Server-style scenario's offered load (optional column)


@dataclass(frozen=True, slots=True)
class Catalog:
    """Devices and models by id, with alias lookup. Immutable: overrides return a new catalog."""

    devices: tuple[Device, ...]
    models: tuple[Model, ...]
    measurements: tuple[Measurement, ...] = ()

    def device(self, key: str) -> Device:
        """The device with this id or alias (case-insensitive)."""
        wanted = key.strip().lower()
        for dev in self.devices:
            if wanted == dev.device_id.lower() or wanted in dev.aliases:
                return dev
        raise NotFoundError("device", key, valid=[d.device_id for d in self.devices])

    def model(self, key: str) -> Model:
        """The model with this id or alias (case-insensitive; ``org/`` prefixes are ignored)."""
        wanted = key.strip().lower().rsplit("/", 1)[-1]
        for mod in self.models:
            if wanted == mod.model_id or wanted in mod.aliases or wanted == mod.name.lower():
                return mod
        raise NotFoundError("model", key, valid=[m.model_id for m in self.models])

    def with_documents(self, documents: Sequence[Mapping[str, Any]]) -> Catalog:
        """A catalog with user documents applied (each ``{"devices": [...], "models": [...]}``).

        An entry whose id matches an existing device or model overrides the fields it gives; the
        overridden fields are recorded in ``assumed`` so every output can show them. A new id
        adds an entry. Unknown fields raise InvalidConfigError naming the field.
        """
        devices = {d.device_id: d for d in self.devices}
        models = {m.model_id: m for m in self.models}
        for doc in documents:
            unknown = set(doc) - {"devices", "models"}
            if unknown:
                raise InvalidConfigError(
                    "catalog section", sorted(unknown)[0], "sections are 'devices' and 'models'"
                )
            for entry in _entries(doc, "devices"):
                dev = _device_from_user(entry, devices)
                devices[dev.device_id] = dev
            for entry in _entries(doc, "models"):
                mod = _model_from_user(entry, models)
                models[mod.model_id] = mod
        return Catalog(tuple(devices.values()), tuple(models.values()), self.measurements)


@cache
def default_catalog() -> Catalog:
    """The catalog shipped in the package (devices.csv, models.csv, measurements.csv)."""
    overlay = {row["device_id"]: row for row in _csv_rows("device_overlay.csv")}
    devices = tuple(
        _device_from_row(row, overlay.get(row["device_id"], {})) for row in _csv_rows("devices.csv")
    )
    models = tuple(_model_from_row(row) for row in _csv_rows("models.csv"))
    measurements = tuple(_measurement_from_row(row) for row in _csv_rows("measurements.csv"))
    return Catalog(devices, models, measurements)


def package_text(name: str) -> str:
    """The text of a data file shipped in ``npucenter/catalog/data``."""
    return resources.files("npucenter.catalog").joinpath("data", name).read_text(encoding="utf-8")


def _csv_rows(name: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(package_text(name))))


def _num(value: str) -> float | None:
    value = value.strip()
    return float(value) if value else None


def _int(value: str) -> int | None:
    value = value.strip()
    return int(value) if value.isdigit() else None


def _aliases(value: str) -> tuple[str, ...]:
    """A ``;``-separated alias cell, lower-cased, blanks dropped."""
    return tuple(a.strip().lower() for a in value.split(";") if a.strip())


def _device_from_row(row: Mapping[str, str], extra: Mapping[str, str]) -> Device:
    precisions = tuple(Precision.parse(p) for p in extra.get("precisions", "").split(";") if p)
    aliases = _aliases(extra.get("aliases", ""))
    notes = row["notes"]
    if extra.get("notes"):
        notes = f"{notes} | {extra['notes']}"
    return Device(
        device_id=row["device_id"],
        vendor=row["vendor"],
        name=row["name"],
        kind=row["kind"],
        memory_gb=_num(row["memory_gb"]),
        memory_bandwidth_gbps=_num(row["memory_bandwidth_gbps"]),
        bf16_tflops=_num(row["bf16_tflops"]),
        fp8_tflops=_num(row["fp8_tflops"]),
        int8_tops=_num(row["int8_tops"]),
        tdp_w=_num(row["tdp_w"]),
        interconnect=row["interconnect"],
        interconnect_gbps=_num(extra.get("interconnect_gbps", "")),
        cards_per_server=_int(row["host_cards_per_server"]),
        precisions=precisions,
        aliases=aliases,
        source_url=row["source_url"],
        notes=notes,
    )


def _model_from_row(row: Mapping[str, str]) -> Model:
    return Model(
        model_id=row["model_id"],
        name=row["name"],
        num_layers=int(row["num_layers"]),
        hidden_size=int(row["hidden_size"]),
        num_attention_heads=int(row["num_attention_heads"]),
        num_kv_heads=int(row["num_kv_heads"]),
        head_dim=int(row["head_dim"]),
        intermediate_size=int(row["intermediate_size"]),
        vocab_size=int(row["vocab_size"]),
        max_context_tokens=int(row["max_context_tokens"]),
        aliases=_aliases(row["aliases"]),
        tie_word_embeddings=row["tie_word_embeddings"].strip().lower() == "true",
        source_url=row["source_url"],
    )


def parse_measurements(text: str, *, name: str = "measurements") -> tuple[Measurement, ...]:
    """Rows of a CSV in measurements.csv's format (already read; the caller does the I/O).

    Raises:
        InvalidConfigError: a column is missing or a number does not parse (names the line).
    """
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in MEASUREMENT_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise InvalidConfigError(
            name, ",".join(missing), f"missing column(s); expected {','.join(MEASUREMENT_COLUMNS)}"
        )
    out = []
    for line, row in enumerate(reader, start=2):
        try:
            out.append(_measurement_from_row({k: (v or "").strip() for k, v in row.items() if k}))
        except ValueError as exc:
            raise InvalidConfigError(f"{name} line {line}", dict(row), str(exc)) from exc
    return tuple(out)


def _measurement_from_row(row: Mapping[str, str]) -> Measurement:
    return Measurement(
        device_id=row["device_id"],
        num_devices=int(row["num_devices"]),
        model_name=row["model"],
        precision=row["precision"],
        engine=row["engine"],
        scenario=row["scenario"],
        input_tokens=_int(row["input_tokens"]),
        output_tokens=_int(row["output_tokens"]),
        batch=_int(row["batch_or_concurrency"]),
        metric=row["metric"],
        value=float(row["value"]),
        unit=row["unit"],
        source_url=row["source_url"],
        notes=row["notes"],
        target_qps=_num(row.get("target_qps", "")),
    )


def _entries(doc: Mapping[str, Any], section: str) -> Iterable[Mapping[str, Any]]:
    items = doc.get(section) or []
    if not isinstance(items, list):
        raise InvalidConfigError(section, type(items).__name__, "must be a list of tables")
    for item in items:
        if not isinstance(item, Mapping):
            raise InvalidConfigError(section, item, "each entry must be a table/mapping")
        yield item


_DEVICE_FIELDS = {f.name for f in fields(Device)} - {"assumed", "assumption_sources"}
_MODEL_FIELDS = {f.name for f in fields(Model)} - {"assumed"}


def _device_from_user(entry: Mapping[str, Any], known: Mapping[str, Device]) -> Device:
    data = dict(entry)
    key = str(data.pop("id", data.pop("device_id", "")))
    if not key:
        raise InvalidConfigError("devices[].id", None, "every device entry needs an id")
    source = str(data.pop("source", data.pop("source_url", "user catalog")))
    unknown = sorted(set(data) - _DEVICE_FIELDS)
    if unknown:
        raise InvalidConfigError(
            f"device {key}.{unknown[0]}",
            data[unknown[0]],
            f"unknown field; known: {sorted(_DEVICE_FIELDS)}",
        )
    if "precisions" in data:
        data["precisions"] = tuple(Precision.parse(p) for p in data["precisions"])
    if "aliases" in data:
        data["aliases"] = tuple(str(a).lower() for a in data["aliases"])
    base = _find(known, key)
    try:
        if base is not None:
            assumed = tuple(dict.fromkeys((*base.assumed, *data)))
            return replace(
                base,
                **data,
                assumed=assumed,
                assumption_sources=(*base.assumption_sources, source),
            )
        return Device(device_id=key, **data, assumed=tuple(data), assumption_sources=(source,))
    except TypeError as exc:
        raise InvalidConfigError(f"device {key}", dict(entry), str(exc)) from None


def _model_from_user(entry: Mapping[str, Any], known: Mapping[str, Model]) -> Model:
    data = dict(entry)
    key = str(data.pop("id", data.pop("model_id", ""))).lower()
    if not key:
        raise InvalidConfigError("models[].id", None, "every model entry needs an id")
    data.pop("source", None)
    unknown = sorted(set(data) - _MODEL_FIELDS)
    if unknown:
        raise InvalidConfigError(
            f"model {key}.{unknown[0]}",
            data[unknown[0]],
            f"unknown field; known: {sorted(_MODEL_FIELDS)}",
        )
    if "aliases" in data:
        data["aliases"] = tuple(str(a).lower() for a in data["aliases"])
    data.setdefault("name", key)
    base = known.get(key)
    try:
        if base is not None:
            return replace(base, **data, assumed=tuple(dict.fromkeys((*base.assumed, *data))))
        return Model(model_id=key, **data, assumed=tuple(data))
    except TypeError as exc:
        raise InvalidConfigError(f"model {key}", dict(entry), str(exc)) from None


def _find(known: Mapping[str, Device], key: str) -> Device | None:
    low = key.lower()
    for dev in known.values():
        if dev.device_id.lower() == low or low in dev.aliases:
            return dev
    return None
