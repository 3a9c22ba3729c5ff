"""Invariants of the live control plane under random operation sequences (Hypothesis, SQLite).

After every operation and the admission cycle that follows it: a card has at most one holder,
never a down one; admitted/running jobs hold exactly their cards on one server and other jobs
none; placed replicas hold TP cards; no tenant holds more than nominal + borrowing limit; and the
ledger bills exactly the card-seconds held (checked after a final checkpoint).
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from npucenter.api.admission import run_admission
from npucenter.api.context import ControlPlane
from npucenter.clock import FakeClock
from npucenter.errors import ConflictError, NotFoundError
from npucenter.settings import Settings
from npucenter.store import Database, upgrade
from npucenter.store.models import Deployment, Job, ReplicaRow

TENANTS = ("a", "b", "c")
DEVICES = ("rngd", "h100")
LIMITS = {  # tenant -> (nominal per device, borrowing limit, cohort, priority)
    "a": (4, 4, "center", "production"),
    "b": (4, None, "center", "research"),
    "c": (2, 0, None, "education"),
}

_OPS = st.one_of(
    st.tuples(
        st.just("job"),
        st.sampled_from(TENANTS),
        st.sampled_from(DEVICES),
        st.sampled_from([1, 2, 4, 8]),
    ),
    st.tuples(
        st.just("deploy"), st.sampled_from(TENANTS), st.sampled_from(DEVICES), st.integers(0, 3)
    ),
    st.tuples(st.just("cancel"), st.integers(1, 12)),
    st.tuples(st.just("finish"), st.integers(1, 12)),
    st.tuples(st.just("scale"), st.integers(1, 4), st.integers(0, 4)),
    st.tuples(
        st.just("health"),
        st.sampled_from(["rngd-0", "rngd-1", "h100-0"]),
        st.sampled_from(["down", "healthy"]),
    ),
    st.tuples(st.just("tick"), st.floats(0.5, 50.0)),
)


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("inv") / "template.db"
    url = f"sqlite:///{path}"
    upgrade(url)
    clock = FakeClock(1_000.0)
    db = Database(url)
    control = ControlPlane(
        settings=Settings(data_dir=path.parent, database_url=url), db=db, now_s=clock.now_s
    )
    with control.tx() as repo:
        for name, cards in (("rngd-0", 8), ("rngd-1", 4)):
            repo.create_server(name, "rngd", cards)
        repo.create_server("h100-0", "h100", 4)
        for name in TENANTS:
            tenant = repo.create_tenant(name, "company" if name == "a" else "university")
            nominal, borrow, cohort, prio = LIMITS[name]
            for device in DEVICES:
                repo.set_quota(
                    tenant,
                    device,
                    nominal_cards=nominal,
                    borrowing_limit_cards=borrow,
                    cohort=cohort,
                    priority_class=prio,
                )
    db.dispose()
    return path


def _apply(control: ControlPlane, clock: FakeClock, op: tuple) -> None:
    kind = op[0]
    with control.tx() as repo:
        if kind == "job":
            repo.submit_job(
                repo.get_tenant(op[1]),
                name="j",
                kind="finetune",
                device_type=op[2],
                num_cards=op[3],
                image="img",
            )
        elif kind == "deploy":
            repo.create_deployment(
                repo.get_tenant(op[1]),
                name=f"d{repo.session.query(Deployment).count()}",
                model="llama-3.1-8b",
                device_type=op[2],
                tp=1,
                precision="bf16",
                replicas=op[3],
            )
        elif kind in ("cancel", "finish"):
            job = repo.session.get(Job, op[1])
            if job is None:
                return
            target = "cancelled" if kind == "cancel" else "running"
            if kind == "finish" and job.state == "running":
                target = "succeeded"
            try:
                repo.transition_job(job, target, reason=kind)
            except ConflictError:
                return
        elif kind == "scale":
            try:
                repo.scale_deployment(repo.get_deployment(op[1]), op[2])
            except NotFoundError:
                return
        elif kind == "health":
            repo.set_health(repo.get_server(op[1]), op[2])
    run_admission(control)


def _check(control: ControlPlane) -> int:
    """Check the invariants; return the number of cards held."""
    with control.tx() as repo:
        servers = {s.id: s for s in repo.list_servers()}
        cards = {c.id: (s, c) for s in servers.values() for c in s.cards}
        allocs = repo.allocations()
        assert max(Counter(a.card_id for a in allocs).values(), default=0) <= 1
        for a in allocs:
            server, card = cards[a.card_id]
            assert server.health != "down" and card.health != "down"
        by_job = defaultdict(list)
        by_rep = defaultdict(list)
        for a in allocs:
            (by_job[a.job_id] if a.job_id is not None else by_rep[a.replica_id]).append(a)
        for job in repo.list_jobs():
            held = by_job.get(job.id, [])
            if job.state in ("admitted", "running"):
                assert len(held) == job.num_cards
                assert {cards[a.card_id][0].id for a in held} == {job.server_id}
                assert {cards[a.card_id][1].device_type for a in held} == {job.device_type}
            else:
                assert held == []
        for rep in repo.session.query(ReplicaRow):
            held = by_rep.get(rep.id, [])
            dep = repo.session.get_one(Deployment, rep.deployment_id)
            assert len(held) == (dep.tp if rep.state == "placed" else 0)
        names = {t.id: t.name for t in repo.list_tenants()}
        for (tenant_id, _device), (used, _borrowed) in repo.cards_in_use().items():
            nominal, borrow, _, _ = LIMITS[names[tenant_id]]
            if borrow is not None:
                assert used <= nominal + borrow
        return len(allocs)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(_OPS, min_size=1, max_size=14))
def test_invariants_hold_and_the_ledger_bills_exactly_the_time_held(template, ops):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "db.sqlite"
        shutil.copyfile(template, path)
        url = f"sqlite:///{path}"
        clock = FakeClock(2_000.0)
        control = ControlPlane(
            settings=Settings(data_dir=Path(tmp), database_url=url),
            db=Database(url),
            now_s=clock.now_s,
        )
        expected_s = 0.0
        held = _check(control)
        try:
            for op in ops:
                if op[0] == "tick":
                    expected_s += held * op[1]
                    clock.advance(op[1])
                else:
                    _apply(control, clock, op)
                held = _check(control)
            with control.tx() as repo:
                repo.checkpoint_usage()
                billed = sum(r.device_seconds for r in repo.list_usage(limit=100_000))
            assert billed == pytest.approx(expected_s, rel=1e-9, abs=1e-6)
        finally:
            control.db.dispose()
