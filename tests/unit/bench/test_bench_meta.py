"""Meta-tests of the bench package: __all__, docstrings, and the power-source registry."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import npucenter.bench
from npucenter.bench.power import POWER_SOURCES

MODULES = sorted(m.name for m in pkgutil.iter_modules(npucenter.bench.__path__, "npucenter.bench."))


@pytest.mark.parametrize("name", ["npucenter.bench", *MODULES])
def test_modules_declare_and_document_their_public_names(name):
    mod = importlib.import_module(name)
    assert mod.__doc__ and mod.__doc__.strip(), name
    assert hasattr(mod, "__all__"), name
    for public in mod.__all__:
        obj = getattr(mod, public)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__doc__, f"{name}.{public} has no docstring"


@pytest.mark.parametrize(("name", "factory"), list(POWER_SOURCES.items()))
async def test_power_sources_satisfy_the_protocol(name, factory):
    option = "100" if name == "constant" else None
    source = factory(option, "http://127.0.0.1:9")
    assert isinstance(source.name, str) and callable(source.read)
    assert inspect.iscoroutinefunction(source.read)
