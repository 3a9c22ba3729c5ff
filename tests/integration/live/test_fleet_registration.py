"""`npucenter up` registers its fleet in the store: servers, the operator's deployments on the
cards the file gives them; idempotent across starts on one data directory; every example file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from factories import make_tenant
from npucenter.api import create_app
from npucenter.files.fleet import load_fleet
from npucenter.fleet import fleet_from_dict
from npucenter.gateway.reconciler import wanted_replicas
from npucenter.live.fleet import deployment_options, device_names, register_fleet
from npucenter.live.gateway import OPERATOR_TENANT
from npucenter.settings import Settings

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "fleets"
FLEET = fleet_from_dict(
    {
        "name": "lab",
        "servers": [
            {"device": "rngd", "count": 2, "cards_per_server": 8},
            {"device": "h100", "count": 1, "cards_per_server": 8},
        ],
        "services": [
            {
                "model": "llama-3.1-8b",
                "device": "rngd",
                "replicas_per_server": 2,
                "max_num_seqs": 32,
            },
            {"service": "chat", "model": "llama-3.1-8b", "device": "h100", "tp": 2},
        ],
        "tariff_usd_per_device_hour": {"rngd": 1.0, "h100": 2.0},
    }
)


def _control(data_dir: Path) -> Any:
    settings = Settings.from_env(
        {"NPUCENTER_ADMIN_KEY": "admin-0123456789abcdef"}, data_dir=data_dir
    )
    return create_app(settings).state.control


def _state(control: Any) -> tuple[Any, ...]:
    with control.tx() as repo:
        servers = sorted((s.name, s.device_type, len(s.cards)) for s in repo.list_servers())
        deps = sorted((d.name, d.model, d.tp, d.replicas) for d in repo.list_deployments())
        quotas = sorted((q.device_type, q.nominal_cards) for q in repo.list_quotas())
        wanted = sorted(
            (w.replica_id, w.deployment, w.device, w.alias, w.max_num_seqs)
            for w in wanted_replicas(
                repo, options=deployment_options(FLEET), device_names=device_names(FLEET)
            )
        )
    return servers, deps, quotas, wanted


def test_registration_is_idempotent_across_two_starts_on_one_data_dir(tmp_path: Path) -> None:
    first = register_fleet(_control(tmp_path), FLEET)
    assert first.servers == ["rngd-0", "rngd-1", "h100-0"]
    assert first.deployments == ["llama-3.1-8b-rngd", "chat-h100"]
    assert first.placed == ["rngd-0-r0", "rngd-0-r1", "rngd-1-r0", "rngd-1-r1", "h100-0-r0"]
    control = _control(tmp_path)
    with control.tx() as repo:  # the operator adds a server by hand between the two starts
        repo.create_server("extra-0", "h100", 4)
    before = _state(control)
    second = register_fleet(_control(tmp_path), FLEET)  # a second start: nothing new
    assert (second.servers, second.deployments, second.placed) == ([], [], [])
    assert _state(_control(tmp_path)) == before
    servers, deps, quotas, wanted = before
    assert ("extra-0", "nvidia_h100_sxm", 4) in servers and len(servers) == 4
    assert deps == [
        ("chat-h100", "llama-3.1-8b", 2, 1),
        ("llama-3.1-8b-rngd", "llama-3.1-8b", 1, 4),
    ]
    assert quotas == [("furiosa_rngd", 4), ("nvidia_h100_sxm", 2)]  # the operator's, covering
    # each replica on the cards the file gives it, named as the dashboard names it
    assert wanted == [
        ("h100-0-r0", "chat-h100", "h100", "chat", 256),
        ("rngd-0-r0", "llama-3.1-8b-rngd", "rngd", None, 32),
        ("rngd-0-r1", "llama-3.1-8b-rngd", "rngd", None, 32),
        ("rngd-1-r0", "llama-3.1-8b-rngd", "rngd", None, 32),
        ("rngd-1-r1", "llama-3.1-8b-rngd", "rngd", None, 32),
    ]
    with control.tx() as repo:
        owners = {repo.get_tenant(d.tenant_id).name for d in repo.list_deployments()}
    assert owners == {OPERATOR_TENANT}


def test_a_taken_card_sends_the_fleet_replica_to_admission(tmp_path: Path) -> None:
    control = _control(tmp_path)
    with control.tx() as repo:  # a tenant's replica holds h100-0's cards 0-1 before the fleet
        repo.create_server("h100-0", "h100", 8)
        acme = make_tenant(repo, device_type="h100", nominal_cards=2)
        repo.create_deployment(
            acme, name="mine", model="llama-3.1-8b", device_type="h100", tp=2,
            precision="fp8", replicas=1,
        )  # fmt: skip
    from npucenter.api.admission import run_admission

    run_admission(control)
    out = register_fleet(control, FLEET)
    assert "h100-0-r0" not in out.placed
    with control.tx() as repo:
        wanted = {w.replica_id: w.deployment for w in wanted_replicas(repo)}
    assert wanted["h100-0-r0"] == "mine" and wanted["h100-0-r2"] == "chat-h100"


@pytest.mark.parametrize(
    "path",
    sorted(p for p in EXAMPLES.glob("*.yaml") if "servers:" in p.read_text()),
    ids=lambda p: p.name,
)
def test_every_example_fleet_registers(path: Path, tmp_path: Path) -> None:
    fleet = load_fleet(path)
    out = register_fleet(_control(tmp_path), fleet)
    assert len(out.servers) == sum(g.num_servers for g in fleet.servers)
    if path.name == "gwangju-atom.yaml":  # ATOM has no sourced bandwidth/TDP: that service waits
        assert [s.split(":")[0] for s in out.skipped] == ["chat-atom"]
    else:
        assert out.skipped == []
    assert len(out.deployments) == len(fleet.services) - len(out.skipped)
    assert len(out.placed) == len([r for r in fleet.replicas() if r.device_id != "atom"])


def _limits(q: Any) -> tuple[Any, ...]:
    return q.borrowing_limit_cards, q.cohort, q.priority_class


def _owners_and_quotas(control: Any) -> tuple[list[Any], list[Any], list[Any]]:
    with control.tx() as repo:
        names = {t.id: t.name for t in repo.list_tenants()}
        tenants = sorted((t.name, t.kind) for t in repo.list_tenants())
        deps = sorted(
            (names[d.tenant_id], d.name, d.priority_class) for d in repo.list_deployments()
        )
        quotas = sorted(
            (names[q.tenant_id], q.device_type, q.nominal_cards, *_limits(q))
            for q in repo.list_quotas()
        )
    return tenants, deps, quotas


def test_the_fleet_files_tenants_own_their_services_and_get_their_quotas(
    tmp_path: Path,
) -> None:
    fleet = load_fleet(EXAMPLES / "center-with-jobs.yaml")
    first = register_fleet(_control(tmp_path), fleet)
    assert first.tenants == ["acme", "kaist"]
    assert sorted(first.quotas) == [
        "acme/furiosa_rngd", "acme/nvidia_h100_sxm", "kaist/nvidia_h100_sxm",
    ]  # fmt: skip
    tenants, deps, quotas = _owners_and_quotas(_control(tmp_path))
    assert ("acme", "company") in tenants and ("kaist", "company") in tenants
    assert deps == [("acme", "chat-h100", "production"), ("acme", "chat-rngd", "production")]
    assert quotas == [
        ("acme", "furiosa_rngd", 32, None, "center", "production"),
        ("acme", "nvidia_h100_sxm", 4, None, "center", "production"),
        ("kaist", "nvidia_h100_sxm", 4, 2, "center", "research"),
    ]  # from the file's tenants block; the operator needs none (it owns no service)
    # the fleet file's alias and limits follow the deployment to its owner
    options = deployment_options(fleet)
    assert options("acme", "chat-h100") is not None and options("acme", "chat-h100").alias == "chat"
    assert options(OPERATOR_TENANT, "chat-h100") is None


def test_a_second_start_keeps_an_operators_quota_change(tmp_path: Path) -> None:
    fleet = load_fleet(EXAMPLES / "center-with-jobs.yaml")
    register_fleet(_control(tmp_path), fleet)
    control = _control(tmp_path)
    with control.tx() as repo:  # the operator halves kaist's H100 quota and drops acme's RNGD one
        kaist = repo.get_tenant("kaist")
        repo.set_quota(kaist, "h100", nominal_cards=2, cohort="center")
        acme = repo.get_tenant("acme")
        (rngd,) = [q for q in repo.list_quotas(tenant_id=acme.id) if "rngd" in q.device_type]
        repo.delete_quota(rngd.id)
    before = _owners_and_quotas(_control(tmp_path))
    second = register_fleet(_control(tmp_path), fleet)
    assert (second.tenants, second.deployments) == ([], [])
    assert second.quotas == ["acme/furiosa_rngd"]  # only where the store has none
    tenants, deps, quotas = _owners_and_quotas(_control(tmp_path))
    assert (tenants, deps) == before[:2]
    assert ("kaist", "nvidia_h100_sxm", 2, None, "center", "research") in quotas
    assert ("acme", "furiosa_rngd", 32, None, "center", "production") in quotas
