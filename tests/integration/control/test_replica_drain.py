"""A replica scaled down while its engine runs drains in the store: it keeps its cards (held by
its tenant, billed, shown ``draining``) until the reconciler reports its engine gone; it is not
one of the deployment's replicas meanwhile, and scaled up again it serves on the same cards.
A deployment deleted drains its replicas the same way, gone for its tenant at once (404, not
listed, its name free), its hidden row going with the last replica released.

On SQLite and PostgreSQL (what one gateway writes, every other reads: the rows are the truth)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from npucenter.api import create_app
from npucenter.api.admission import run_admission
from npucenter.settings import Settings
from npucenter.store.deployments import DELETED
from npucenter.store.models import Deployment


def _setup(admin: Any, app: Any) -> tuple[int, list[int]]:
    """acme's 2-replica deployment on the only 2 cards, both engines running; lab waits for one."""
    for name in ("acme", "lab"):
        assert admin.post("/api/tenants", json={"name": name, "kind": "company"}).is_success
        quota = {"tenant": name, "device_type": "rngd", "nominal_cards": 2}
        assert admin.put("/api/quotas", json=quota).status_code in (200, 201)
    server = {"name": "rngd-0", "device_type": "rngd", "num_cards": 2}
    assert admin.post("/api/servers", json=server).status_code == 201
    body = {"name": "chat", "model": "llama-3.1-8b", "device_type": "rngd", "replicas": 2}
    dep = admin.post("/api/deployments", json=body | {"tenant": "acme"}).json()
    assert dep["num_placed_replicas"] == 2
    with app.state.control.tx() as repo:
        ids = [r.id for r in repo.replicas_of(repo.get_deployment(dep["id"]))]
        repo.record_run_states({i: ("running", None) for i in ids})  # the reconciler's report
    return int(dep["id"]), ids


def _billed_s(app: Any, ref_part: str) -> float:
    with app.state.control.tx() as repo:
        rows = repo.list_usage(kind="replica")
        return sum(u.device_seconds for u in rows if ref_part in (u.ref or ""))


def _lab_waits(admin: Any) -> int:
    body = {"name": "lab-chat", "model": "llama-3.1-8b", "device_type": "rngd", "replicas": 1}
    dep = admin.post("/api/deployments", json=body | {"tenant": "lab"})
    assert dep.status_code == 201, dep.text
    return int(dep.json()["id"])


def test_a_drained_replica_holds_its_cards_and_is_billed_until_its_engine_stops(
    admin: Any, app: Any, clock: Any
) -> None:
    dep_id, (first, second) = _setup(admin, app)
    lab_id = _lab_waits(admin)
    clock.advance(10.0)
    patch = admin.patch(f"/api/deployments/{dep_id}", json={"replicas": 1})
    assert patch.is_success
    shown = patch.json()  # `deploy show`: one replica, and the one draining shown as such
    assert (shown["replicas"], shown["num_placed_replicas"], shown["num_running_replicas"]) == (
        1,
        1,
        1,
    )
    states = {r["index"]: r["state"] for r in shown["replica_states"]}
    assert states == {0: "placed", 1: "draining"}  # equal in flight: the newest drains
    (server,) = admin.get("/api/servers").json()  # `fleet list`: still held, by acme
    assert server["num_free_cards"] == 0
    assert [(c["tenant"], c["run_state"]) for c in server["cards"]] == [
        ("acme", "running"),
        ("acme", "draining"),
    ]
    (quota,) = [q for q in admin.get("/api/quotas").json() if q["tenant"] == "acme"]
    assert quota["used_cards"] == 2
    run_admission(app.state.control)  # nobody gets the draining card
    lab = admin.get(f"/api/deployments/{lab_id}").json()
    assert lab["num_placed_replicas"] == 0
    # the drain lasts 50 s; the reconciler still holds the engine, then reports it gone
    clock.advance(50.0)
    with app.state.control.tx() as repo:
        assert repo.release_drained_replicas({second}) == []
        repo.checkpoint_usage()  # a checkpoint during the drain bills it too
    clock.advance(5.0)
    with app.state.control.tx() as repo:
        assert repo.release_drained_replicas({first}) == [second]
        assert [r.index for r in repo.replicas_of(repo.get_deployment(dep_id), draining=True)] == [
            0
        ]
    assert _billed_s(app, "replica:1") == pytest.approx(65.0)  # placement to stop, not to 10 s
    run_admission(app.state.control)
    lab = admin.get(f"/api/deployments/{lab_id}").json()
    assert lab["num_placed_replicas"] == 1 and lab["replica_states"][0]["card_indexes"] == [1]


def test_a_draining_replica_wanted_again_serves_on_its_cards(admin: Any, app: Any) -> None:
    dep_id, (_first, second) = _setup(admin, app)
    assert admin.patch(f"/api/deployments/{dep_id}", json={"replicas": 1}).is_success
    again = admin.patch(f"/api/deployments/{dep_id}", json={"replicas": 3}).json()
    by_index = {r["index"]: r for r in again["replica_states"]}
    assert {i: r["state"] for i, r in by_index.items()} == {0: "placed", 1: "placed", 2: "pending"}
    assert by_index[1]["card_indexes"] == [1] and by_index[1]["run_state"] == "running"
    with app.state.control.tx() as repo:
        assert repo.get_replica(second).state == "placed"
        assert repo.release_drained_replicas(set()) == []  # nothing drains now


def test_a_replica_no_engine_runs_for_is_released_at_once(admin: Any, app: Any) -> None:
    dep_id, (_first, second) = _setup(admin, app)
    with app.state.control.tx() as repo:  # no node takes it: nothing to wait for
        repo.record_run_states({second: ("pending", "no Ray node has RBLN:1")})
    shown = admin.patch(f"/api/deployments/{dep_id}", json={"replicas": 1}).json()
    assert [r["state"] for r in shown["replica_states"]] == ["placed"]
    (server,) = admin.get("/api/servers").json()
    assert server["num_free_cards"] == 1


def test_deleting_or_preempting_a_draining_replica_bills_and_removes_it(
    admin: Any, app: Any, clock: Any
) -> None:
    dep_id, (_first, second) = _setup(admin, app)
    assert admin.patch(f"/api/deployments/{dep_id}", json={"replicas": 1}).is_success
    clock.advance(30.0)
    with app.state.control.tx() as repo:  # preempted (admission's apply) while it drains
        rep = repo.get_replica(second)
        assert repo.release_replica(rep, repo.get_deployment(dep_id), reason="preempted") == 30.0
        assert repo.replicas_in_state("draining") == [] and repo.replicas_in_state("pending") == []
    assert admin.patch(f"/api/deployments/{dep_id}", json={"replicas": 0}).is_success
    clock.advance(20.0)
    assert admin.delete(f"/api/deployments/{dep_id}").status_code == 204  # it still drains
    (server,) = admin.get("/api/servers").json()
    assert server["num_free_cards"] == 1
    with app.state.control.tx() as repo:  # preempted while it drains: billed, row and all gone
        (rep,) = repo.replicas_in_state("draining")
        dep = repo.get_deployment(dep_id, deleted=True)
        assert repo.release_replica(rep, dep, reason="preempted") == pytest.approx(50.0)
        assert repo.row(Deployment, dep_id) is None
    assert _billed_s(app, "replica:0") == pytest.approx(50.0)
    (server,) = admin.get("/api/servers").json()
    assert server["num_free_cards"] == 2


def test_a_deleted_deployment_is_gone_at_once_while_its_replicas_drain_on_their_cards(
    admin: Any, app: Any, clock: Any
) -> None:
    dep_id, (first, second) = _setup(admin, app)
    lab_id = _lab_waits(admin)
    clock.advance(10.0)
    assert admin.delete(f"/api/deployments/{dep_id}").status_code == 204
    # gone for the tenant: not found, not listed, its name free at once
    assert admin.get(f"/api/deployments/{dep_id}").status_code == 404
    assert admin.delete(f"/api/deployments/{dep_id}").status_code == 404
    assert admin.patch(f"/api/deployments/{dep_id}", json={"replicas": 3}).status_code == 404
    assert [d["name"] for d in admin.get("/api/deployments").json()] == ["lab-chat"]
    body = {"name": "chat", "model": "llama-3.1-8b", "device_type": "rngd", "replicas": 1}
    again = admin.post("/api/deployments", json=body | {"tenant": "acme"})
    assert again.status_code == 201, again.text
    assert again.json()["id"] != dep_id and again.json()["num_placed_replicas"] == 0
    # its replicas drain on their cards: held by acme, shown draining, nobody placed there
    (server,) = admin.get("/api/servers").json()
    assert server["num_free_cards"] == 0
    assert [(c["tenant"], c["run_state"]) for c in server["cards"]] == [("acme", "draining")] * 2
    (quota,) = [q for q in admin.get("/api/quotas").json() if q["tenant"] == "acme"]
    assert quota["used_cards"] == 2
    run_admission(app.state.control)
    assert admin.get(f"/api/deployments/{lab_id}").json()["num_placed_replicas"] == 0
    clock.advance(40.0)
    with app.state.control.tx() as repo:  # one engine stopped, the other still drains
        repo.checkpoint_usage()
        assert repo.release_drained_replicas({first}) == [second]
        assert repo.get_deployment(dep_id, deleted=True).replicas == DELETED
    clock.advance(5.0)
    with app.state.control.tx() as repo:
        assert repo.release_drained_replicas(set()) == [first]
        assert repo.row(Deployment, dep_id) is None  # the hidden row went with the last one
    # billed to acme from placement to each stop (not to the delete at 10 s)
    assert _billed_s(app, f"deployment:{dep_id}/replica:1") == pytest.approx(50.0)
    assert _billed_s(app, f"deployment:{dep_id}/replica:0") == pytest.approx(55.0)
    run_admission(app.state.control)  # the cards are free: acme's new chat and lab are placed
    (server,) = admin.get("/api/servers").json()
    assert server["num_free_cards"] == 0
    assert sorted(c["tenant"] for c in server["cards"]) == ["acme", "lab"]


def test_a_deleted_deployment_whose_engines_never_ran_frees_its_cards_at_once(
    admin: Any, app: Any
) -> None:
    dep_id, (first, second) = _setup(admin, app)
    with app.state.control.tx() as repo:  # no node takes them: nothing to wait for
        repo.record_run_states({i: ("pending", "no Ray node") for i in (first, second)})
    assert admin.delete(f"/api/deployments/{dep_id}").status_code == 204
    (server,) = admin.get("/api/servers").json()
    assert server["num_free_cards"] == 2
    with app.state.control.tx() as repo:
        assert repo.row(Deployment, dep_id) is None


def test_another_gateway_on_the_database_sees_the_drain(
    admin: Any, app: Any, database_url: str, admin_key: str, tmp_path: Any, clock: Any
) -> None:
    """A follower process reads the rows the leader's process wrote (PostgreSQL: several
    gateways; SQLite: the same file)."""
    dep_id, _ids = _setup(admin, app)
    lab_id = _lab_waits(admin)
    assert admin.patch(f"/api/deployments/{dep_id}", json={"replicas": 1}).is_success
    settings = Settings(
        data_dir=tmp_path / "follower", database_url=database_url, admin_key=admin_key
    )
    follower = create_app(settings, now_s=clock.now_s, migrate=False)
    try:
        headers = {"Authorization": f"Bearer {admin_key}"}
        with TestClient(follower, headers=headers) as other:
            shown = other.get(f"/api/deployments/{dep_id}").json()
            assert [r["state"] for r in shown["replica_states"]] == ["placed", "draining"]
            (server,) = other.get("/api/servers").json()
            assert [c["run_state"] for c in server["cards"]] == ["running", "draining"]
            run_admission(follower.state.control)  # its cycle leaves the card to acme too
            assert other.get(f"/api/deployments/{lab_id}").json()["num_placed_replicas"] == 0
            # deleted on the leader: the follower finds it gone, its cards still draining
            assert admin.delete(f"/api/deployments/{dep_id}").status_code == 204
            assert other.get(f"/api/deployments/{dep_id}").status_code == 404
            (server,) = other.get("/api/servers").json()
            assert [c["run_state"] for c in server["cards"]] == ["draining", "draining"]
            run_admission(follower.state.control)
            assert other.get(f"/api/deployments/{lab_id}").json()["num_placed_replicas"] == 0
    finally:
        follower.state.control.db.dispose()
