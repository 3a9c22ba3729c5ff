"""Catalog: devices, models and precisions, each number with its source (pure core)."""

from npucenter.catalog.catalog import Catalog, Measurement, default_catalog, package_text
from npucenter.catalog.device import Device
from npucenter.catalog.model import Model
from npucenter.catalog.precision import Precision

__all__ = [
    "Catalog",
    "Device",
    "Measurement",
    "Model",
    "Precision",
    "default_catalog",
    "package_text",
]
