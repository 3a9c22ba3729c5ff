"""Meta-tests: the error tree, the registry and the public names hold their contracts."""

from __future__ import annotations

import importlib

import pytest

from npucenter import errors
from npucenter.errors import NpuCenterError, UnknownPluginError, all_error_classes
from npucenter.registry import Registry


def test_every_error_class_is_exported_and_mapped() -> None:
    classes = all_error_classes()
    public = [c for c in classes if c.__module__ == "npucenter.errors"]
    assert {c.__name__ for c in public} <= set(errors.__all__)
    for cls in classes:
        assert 400 <= cls.http_status <= 599
        assert cls.exit_code >= 1
        assert cls.code


def test_each_error_code_has_one_exit_code() -> None:
    seen: dict[str, int] = {}
    for cls in all_error_classes():
        if cls.code in seen:
            assert seen[cls.code] == cls.exit_code, cls
        seen[cls.code] = cls.exit_code


def test_errors_carry_fields_not_just_text() -> None:
    err = errors.QuotaExceededError("uni", "rngd cards", 4, 1)
    assert err.to_dict()["details"] == {
        "tenant": "uni",
        "resource": "rngd cards",
        "requested": 4,
        "available": 1,
    }
    assert err.to_dict()["code"] == "quota_exceeded"
    assert errors.CapacityUnavailableError("full").retryable
    assert not errors.ModelDoesNotFitError("m", "d", 1, 90.0, 72.0, 2).retryable


def test_registry_rejects_duplicates_and_lists_valid_names() -> None:
    reg: Registry[int] = Registry("widget")
    reg.add("Alpha", 1, aliases=("a",))
    assert reg.get("ALPHA") == 1 and reg.get("a") == 1
    with pytest.raises(ValueError):
        reg.add("alpha", 2)
    with pytest.raises(ValueError):
        reg.add("beta", 2, aliases=("A",))
    with pytest.raises(UnknownPluginError) as err:
        reg.get("gamma")
    assert err.value.valid == ("alpha",)
    assert isinstance(err.value, NpuCenterError) and err.value.http_status == 404


@pytest.mark.parametrize(
    "module",
    [
        "npucenter.errors",
        "npucenter.registry",
        "npucenter.clock",
        "npucenter.catalog",
        "npucenter.perf",
    ],
)
def test_dunder_all_names_exist(module: str) -> None:
    mod = importlib.import_module(module)
    for name in mod.__all__:
        assert hasattr(mod, name), f"{module}.{name}"
