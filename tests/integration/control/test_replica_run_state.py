"""What runs is the store's truth: a placed replica's engine state (as the reconciler reports
it) is stored with its reason, shown by `deploy list`/`fleet list`, and only a replica whose
engine runs is billed device-seconds."""

from __future__ import annotations

import pytest

from npucenter.errors import InvalidConfigError


def _placed_pair(admin) -> dict:  # type: ignore[no-untyped-def]
    assert admin.post("/api/tenants", json={"name": "lab", "kind": "university"}).is_success
    server = {"name": "rngd-0", "device_type": "rngd", "num_cards": 2}
    assert admin.post("/api/servers", json=server).status_code == 201
    quota = {"tenant": "lab", "device_type": "rngd", "nominal_cards": 2}
    assert admin.put("/api/quotas", json=quota).status_code in (200, 201)
    body = {"name": "chat", "model": "llama-3.1-8b", "device_type": "rngd", "replicas": 2}
    dep = admin.post("/api/deployments", json=body | {"tenant": "lab"})
    assert dep.status_code == 201, dep.text
    assert dep.json()["num_placed_replicas"] == 2
    return dep.json()


def _replica_ids(app, dep_id: int) -> list[int]:  # type: ignore[no-untyped-def]
    with app.state.control.tx() as repo:
        return [r.id for r in repo.replicas_of(repo.get_deployment(dep_id))]


def _billed_s(app, ref_part: str) -> float:  # type: ignore[no-untyped-def]
    with app.state.control.tx() as repo:
        return sum(
            u.device_seconds for u in repo.list_usage(kind="replica") if ref_part in (u.ref or "")
        )


def test_a_replica_no_node_takes_is_shown_pending_and_never_billed(admin, app, clock) -> None:  # type: ignore[no-untyped-def]
    dep = _placed_pair(admin)
    up, stuck = _replica_ids(app, dep["id"])
    reason = "no Ray node has FURIOSA:4"
    with app.state.control.tx() as repo:  # the reconciler's first tick: one starts, one cannot
        assert repo.record_run_states({up: ("starting", None), stuck: ("pending", reason)})
    clock.advance(50.0)
    with app.state.control.tx() as repo:
        assert repo.record_run_states({up: ("running", None), stuck: ("pending", reason)}) == [up]
    clock.advance(150.0)
    with app.state.control.tx() as repo:
        repo.checkpoint_usage()
    # the running one pays from when it ran (150 s), the pending one nothing
    assert _billed_s(app, "replica:0") == pytest.approx(150.0)
    assert _billed_s(app, "replica:1") == 0.0
    (shown,) = admin.get("/api/deployments").json()
    assert (shown["num_placed_replicas"], shown["num_running_replicas"]) == (2, 1)
    states = {r["index"]: (r["run_state"], r["run_reason"]) for r in shown["replica_states"]}
    assert states == {0: ("running", None), 1: ("pending", reason)}
    (server,) = admin.get("/api/servers").json()
    assert server["num_free_cards"] == 0 and server["num_idle_held_cards"] == 1
    assert [c["run_state"] for c in server["cards"]] == ["running", "pending"]
    # scaled down while pending: its release bills nothing either
    clock.advance(100.0)
    assert admin.patch(f"/api/deployments/{dep['id']}", json={"replicas": 1}).is_success
    assert _billed_s(app, "replica:1") == 0.0


def test_a_replica_that_stops_running_is_billed_up_to_then_and_again_once_back(
    admin, app, clock
) -> None:  # type: ignore[no-untyped-def]
    dep = _placed_pair(admin)
    first, _second = _replica_ids(app, dep["id"])
    with app.state.control.tx() as repo:
        repo.record_run_states({first: ("running", None)})
    clock.advance(100.0)
    with app.state.control.tx() as repo:  # its engine failed: billed up to now
        repo.record_run_states({first: ("failed", "engine exited 1")})
    assert _billed_s(app, "replica:0") == pytest.approx(100.0)
    clock.advance(300.0)  # failed for 300 s: not billed
    with app.state.control.tx() as repo:
        repo.record_run_states({first: ("running", None)})
    clock.advance(20.0)
    assert admin.delete(f"/api/deployments/{dep['id']}").status_code == 204
    with app.state.control.tx() as repo:  # its engine drains, then the reconciler reports it gone
        assert repo.release_drained_replicas(set()) == [first]
    assert _billed_s(app, "replica:0") == pytest.approx(120.0)
    with app.state.control.tx() as repo, pytest.raises(InvalidConfigError):
        repo.record_run_states({first: ("lost", None)})


def test_a_replica_released_and_placed_again_is_unreported_until_the_next_tick(admin, app) -> None:  # type: ignore[no-untyped-def]
    dep = _placed_pair(admin)
    first, _ = _replica_ids(app, dep["id"])
    with app.state.control.tx() as repo:
        repo.record_run_states({first: ("pending", "no Ray node has FURIOSA:1")})
    assert admin.patch(f"/api/deployments/{dep['id']}", json={"replicas": 0}).is_success
    assert admin.patch(f"/api/deployments/{dep['id']}", json={"replicas": 1}).is_success
    with app.state.control.tx() as repo:
        (rep,) = repo.replicas_of(repo.get_deployment(dep["id"]))
        assert rep.state == "placed" and rep.run_state is None and rep.run_reason is None
