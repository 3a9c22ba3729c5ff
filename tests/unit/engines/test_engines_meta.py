"""Meta-tests for engines/, executors/ and telemetry/: every module has a docstring and an
``__all__`` whose names exist and are documented."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import npucenter.engines
import npucenter.executors
import npucenter.telemetry


def _modules() -> list[str]:
    names = []
    for pkg in (npucenter.engines, npucenter.executors, npucenter.telemetry):
        names.append(pkg.__name__)
        for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
            names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("module", _modules())
def test_module_contract(module: str) -> None:
    mod = importlib.import_module(module)
    assert mod.__doc__ and mod.__doc__.strip(), f"{module} has no docstring"
    if module.endswith("__main__"):
        return
    assert hasattr(mod, "__all__"), f"{module} has no __all__"
    for name in mod.__all__:
        obj = getattr(mod, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__doc__, f"{module}.{name} has no docstring"


async def test_virtual_engine_exits_when_its_parent_is_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio
    import os
    from types import SimpleNamespace

    from npucenter.engines import PARENT_PID_ENV
    from npucenter.engines.virtual.server import _exit_when_parent_dies

    server = SimpleNamespace(should_exit=False)
    monkeypatch.setenv(PARENT_PID_ENV, str(os.getppid() + 100_000))  # not our parent
    await asyncio.wait_for(_exit_when_parent_dies(server), 5)
    assert server.should_exit

    server = SimpleNamespace(should_exit=False)
    monkeypatch.setenv(PARENT_PID_ENV, str(os.getppid()))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(_exit_when_parent_dies(server), 0.8)
    assert not server.should_exit
