"""Settings are the one reader of the environment: what `up`, the catalog and engines read there."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

import npucenter
from npucenter.settings import (
    Settings,
    catalog_paths_from_env,
    environ,
    parent_pid,
)

SRC = Path(npucenter.__file__).resolve().parent


def test_serving_settings_default_to_prefix_affinity_and_a_launched_fleet(tmp_path: Path) -> None:
    s = Settings.from_env({}, data_dir=tmp_path)
    assert s.routing_policy == "prefix-affinity" and s.launch_fleet
    assert s.fleet_path is None and not s.url_given


def test_serving_settings_read_the_environment(tmp_path: Path) -> None:
    env = {
        "NPUCENTER_ROUTING_POLICY": "least-outstanding",
        "NPUCENTER_VIRTUAL_FLEET": "0",
        "NPUCENTER_FLEET": str(tmp_path / "fleet.yaml"),
        "NPUCENTER_URL": "http://127.0.0.1:9000",
    }
    s = Settings.from_env(env, data_dir=tmp_path)
    assert s.routing_policy == "least-outstanding" and not s.launch_fleet
    assert s.fleet_path == tmp_path / "fleet.yaml" and s.url_given


def test_catalog_paths_are_split_on_the_path_separator() -> None:
    env = {"NPUCENTER_CATALOG": os.pathsep.join(["a.toml", "", "b.yaml"])}
    assert catalog_paths_from_env(env) == (Path("a.toml"), Path("b.yaml"))
    assert catalog_paths_from_env({}) == ()


def test_parent_pid_and_the_inherited_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NPUCENTER_PARENT_PID", raising=False)
    assert parent_pid() is None
    monkeypatch.setenv("NPUCENTER_PARENT_PID", "4242")
    assert parent_pid() == 4242
    env = environ()
    env["NPUCENTER_PARENT_PID"] = "1"  # a copy: the process's own environment is untouched
    assert os.environ["NPUCENTER_PARENT_PID"] == "4242"


def test_no_module_but_settings_reads_the_environment() -> None:
    readers = [
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if path.name != "settings.py" and re.search(r"os\.environ|getenv", path.read_text())
    ]
    assert readers == []


def test_the_admission_policy_setting_is_read_and_a_bad_one_refused(tmp_path: Path) -> None:
    from npucenter.errors import InvalidConfigError
    from npucenter.policy.admission import AdmissionPolicy, FairSharingBasis

    env = {"NPUCENTER_ADMISSION_POLICY": "fair_sharing_basis=usage,fair_sharing_preemption=on"}
    s = Settings.from_env(env, data_dir=tmp_path)
    policy = AdmissionPolicy.from_text(s.admission_policy)
    assert policy.fair_sharing_basis is FairSharingBasis.USAGE and policy.fair_sharing_preemption
    with pytest.raises(InvalidConfigError):
        Settings.from_env({"NPUCENTER_ADMISSION_POLICY": "within_tenant=any"}, data_dir=tmp_path)


def test_the_drain_bound_is_read_from_the_environment_and_checked() -> None:
    from npucenter.errors import InvalidConfigError
    from npucenter.settings import ENV_DRAIN, Settings

    assert Settings.from_env({}, data_dir="/tmp/x").drain_s == 60.0
    assert Settings.from_env({ENV_DRAIN: "15"}, data_dir="/tmp/x").drain_s == 15.0
    for bad in ("soon", "-1"):
        with pytest.raises(InvalidConfigError, match=ENV_DRAIN):
            Settings.from_env({ENV_DRAIN: bad}, data_dir="/tmp/x")
