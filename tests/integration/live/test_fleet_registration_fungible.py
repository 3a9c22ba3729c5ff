"""`npucenter up --fleet` with a fungible service (``fallback_devices:``): the fleet's deployment
accepts the listed types in order, admission places each replica on the first with quota and
room, and the engine of each replica's device family serves it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from npucenter.api import create_app
from npucenter.files.fleet import load_fleet
from npucenter.fleet import fleet_from_dict
from npucenter.gateway.reconciler import wanted_replicas
from npucenter.live.fleet import deployment_options, device_names, register_fleet
from npucenter.settings import Settings

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "fleets"
FLEET = fleet_from_dict(
    {
        "name": "fungible-live",
        "servers": [
            {"device": "rngd", "count": 1, "cards_per_server": 8},
            {"device": "l40s", "count": 1, "cards_per_server": 2},
            {"device": "h100", "count": 1, "cards_per_server": 8},
        ],
        "services": [  # code fills the RNGD server; chat lands on L40S, then H100
            {
                "service": "code",
                "model": "llama-3.1-8b",
                "device": "rngd",
                "replicas_per_server": 8,
            },
            {
                "service": "chat",
                "model": "llama-3.1-8b",
                "device": "rngd",
                "precision": "fp8",
                "fallback_devices": ["l40s", "h100"],
                "replicas": 4,
                "engine": "furiosa-llm",
            },
        ],
    }
)


def _control(data_dir: Path) -> Any:
    settings = Settings.from_env(
        {"NPUCENTER_ADMIN_KEY": "admin-0123456789abcdef"}, data_dir=data_dir
    )
    return create_app(settings).state.control


def test_up_creates_the_deployment_with_the_fallback_list_and_places_replicas_in_order(
    tmp_path: Path,
) -> None:
    control = _control(tmp_path)
    out = register_fleet(control, FLEET)
    assert out.skipped == [] and "chat-rngd" in out.deployments
    with control.tx() as repo:
        (chat,) = [d for d in repo.list_deployments() if d.name == "chat-rngd"]
        assert chat.accepted_device_types() == ["furiosa_rngd", "nvidia_l40s", "nvidia_h100_sxm"]
        placed = [(r.index, r.device_type) for r in repo.replicas_of(chat)]
        ids = [r.id for r in repo.replicas_of(chat)]
        # the operator's covering quota names every listed type, so room decides
        quotas = {q.device_type: q.nominal_cards for q in repo.list_quotas()}
        wanted = {
            w.deployment + "/" + w.replica_id: (w.device, w.engine.name)
            for w in wanted_replicas(
                repo, options=deployment_options(FLEET), device_names=device_names(FLEET)
            )
        }
    # L40S first (2 cards, room for 2), then H100 for the rest: RNGD is full. By index: the
    # replicas were created at one moment, and code's 8 took ids 1-8, so chat's ids 9-12 would
    # sort "replica:10" before "replica:9" as strings
    assert [t for _, t in sorted(placed)] == ["nvidia_l40s"] * 2 + ["nvidia_h100_sxm"] * 2
    assert ids == [9, 10, 11, 12]
    assert quotas["nvidia_l40s"] >= 4 and quotas["nvidia_h100_sxm"] >= 4
    chat_engines = {v for k, v in wanted.items() if k.startswith("chat-rngd/")}
    assert chat_engines == {("l40s", "vllm"), ("h100", "vllm")}  # the GPU family's engine
    assert {v for k, v in wanted.items() if k.startswith("code-rngd/")} == {("rngd", "virtual")}


def test_a_second_start_keeps_the_fungible_deployment(tmp_path: Path) -> None:
    register_fleet(_control(tmp_path), FLEET)
    again = register_fleet(_control(tmp_path), FLEET)
    assert (again.deployments, again.skipped) == ([], [])


def test_a_fallback_type_the_model_cannot_run_on_skips_the_service(tmp_path: Path) -> None:
    # ATOM has no sourced bandwidth/TDP in the shipped catalog: the list is refused as the API
    # refuses it, the service is logged and skipped, the center still starts
    fleet = fleet_from_dict(
        {
            "servers": [
                {"device": "rngd", "count": 1, "cards_per_server": 8},
                {"device": "atom", "count": 1, "cards_per_server": 4},
            ],
            "services": [
                {
                    "service": "chat",
                    "model": "llama-3.1-8b",
                    "device": "rngd",
                    "fallback_devices": ["atom"],
                    "replicas": 2,
                }
            ],
        }
    )
    out = register_fleet(_control(tmp_path), fleet)
    assert [s.split(":")[0] for s in out.skipped] == ["chat-rngd"]
    assert out.deployments == []


def test_the_shipped_fungible_example_registers_with_its_list(tmp_path: Path) -> None:
    fleet = load_fleet(EXAMPLES / "fungible.yaml")
    control = _control(tmp_path)
    register_fleet(control, fleet)
    with control.tx() as repo:
        (chat,) = [d for d in repo.list_deployments() if d.name == "chat-rngd"]
        by_index = [r.device_type for r in repo.replicas_of(chat)]  # replicas_of: by index
        types = sorted(by_index)
        assert chat.accepted_device_types() == ["furiosa_rngd", "nvidia_l40s", "nvidia_h100_sxm"]
    # as the twin places them (tests/unit/fleet/test_fleet_fungible.py): 2 RNGD, 8 L40S, 2 H100
    assert types == ["furiosa_rngd"] * 2 + ["nvidia_h100_sxm"] * 2 + ["nvidia_l40s"] * 8
    # in index order: each replica takes the first listed type with room left
    assert by_index == ["furiosa_rngd"] * 2 + ["nvidia_l40s"] * 8 + ["nvidia_h100_sxm"] * 2


def test_up_with_a_bad_device_list_exits_2_with_one_line_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "fleet.yaml"
    bad.write_text(
        "servers: [{device: rngd, count: 1}, {device: h100, count: 1}]\n"
        "services: [{service: chat, model: llama-3.1-8b, device: rngd,"
        " fallback_devices: [h100, h100], replicas: 2}]\n"
    )
    with socket.socket() as sock:  # a free port: `up` checks it before reading the fleet
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "NPUCENTER_ADMIN_KEY": "admin-0123456789abcdef"}
    argv = [sys.executable, "-m", "npucenter.cli.main", "up", "--fleet", str(bad)]
    argv += ["--data-dir", str(tmp_path / "data"), "--port", str(port)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 1
    assert "services.fallback_devices" in lines[0] and "'h100' twice" in lines[0]
