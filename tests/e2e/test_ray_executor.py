"""The Ray executor against a real Ray cluster of three nodes on loopback (issue 15).

Ray's own multi-node-on-one-machine support (``ray.cluster_utils.Cluster``) starts a head that
advertises 2 FuriosaAI cards (``FURIOSA``, type ``FURIOSA_RNGD``) labelled as the store's
server ``rngd-0``, a GPU node (1 ``GPU``, type ``H100``) labelled ``h100-0``, and a spare GPU
node with no label. Cost: about 15-25 s of CPU for the cluster and 30-60 s of wall time for
the module on 2 cores; marked ``ray`` and ``slow`` (deselect with ``-m "not ray"``). The
cluster is stopped after the module; every wait is bounded.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

#: Ray replaces a loopback address with the host's own unless told the cluster is local-only
#: (ray/_private/services.py get_node_ip_address; read when ray is imported): this process and
#: every one the test starts set it, so the whole cluster stays on 127.0.0.1.
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
os.environ.update(LOOPBACK_ENV)

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'ray[default]>=2.40')")

from _center import running_up  # noqa: E402

from npucenter.engines import ReplicaSpec  # noqa: E402
from npucenter.errors import CapacityUnavailableError, UpstreamError  # noqa: E402
from npucenter.executors.ray import ACTOR_PREFIX, SERVER_LABEL, RayExecutor  # noqa: E402

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.ray,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

ADMIN = "ray-e2e-admin-key-0123456789abcdef"
FLEET = """\
name: ray-e2e
servers:
  - {device: rngd, count: 1, cards_per_server: 2}
  - {device: h100, count: 1, cards_per_server: 5}
services:
  - {model: llama-3.1-8b, device: rngd, tp: 2, replicas_per_server: 1}
  - {model: llama-3.1-8b, device: h100, tp: 1, replicas_per_server: 1}
  - {model: qwen2.5-7b, device: h100, tp: 4, replicas_per_server: 1}
"""  # the store's h100-0 has 5 cards, its Ray node 1 GPU: the TP-4 replica never runs


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    from ray.cluster_utils import Cluster

    common = {"num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False}
    head = {
        **common,
        "resources": {"FURIOSA": 2, "accelerator_type:FURIOSA_RNGD": 1},
        "labels": {SERVER_LABEL: "rngd-0"},
    }
    c = Cluster(initialize_head=True, connect=False, head_node_args=head)
    gpu = {**common, "num_gpus": 1, "resources": {"accelerator_type:H100": 1}}
    c.gpu_node = c.add_node(**gpu, labels={SERVER_LABEL: "h100-0"})
    c.spare_node = c.add_node(**gpu)
    c.wait_for_nodes()
    try:
        yield c
    finally:
        if ray.is_initialized():
            ray.shutdown()
        c.shutdown()


def _spec(device: str, tp: int) -> ReplicaSpec:
    return ReplicaSpec(engine="virtual", model="llama-3.1-8b", device=device, tp=tp, time_scale=0)


def _node_ids(cluster: Any) -> dict[str, str]:
    return {
        "head": cluster.head_node.node_id,
        "gpu": cluster.gpu_node.node_id,
        "spare": cluster.spare_node.node_id,
    }


async def test_replicas_are_actors_on_the_node_with_their_cards(cluster) -> None:
    def server_handler(signum, frame):  # the server's own SIGTERM handling
        pass

    previous = signal.signal(signal.SIGTERM, server_handler)
    ex = RayExecutor(address=cluster.address, place_timeout_s=60.0)
    try:
        rngd = await ex.start(_spec("rngd", 2), replica_id="rngd-0-r0")
        assert signal.getsignal(signal.SIGTERM) is server_handler  # ray.init kept it
        h100 = await ex.start(_spec("h100", 1), replica_id="h100-0-r0")
        nodes = _node_ids(cluster)
        info_rngd, info_h100 = ex.actor_info(rngd.replica_id), ex.actor_info(h100.replica_id)
        # the labelled nodes of the store's servers, with Ray's own cards in the engine's env
        assert info_rngd["node_id"] == nodes["head"] and info_rngd["cards"] == ["0", "1"]
        assert info_rngd["visible_devices"] == "npu:0,npu:1"  # Ray's FURIOSA_DEVICES, kept
        assert info_h100["node_id"] == nodes["gpu"] and info_h100["visible_devices"] == "0"
        assert rngd.spec.device == "rngd" and h100.launch.host == "127.0.0.1"  # not 0.0.0.0
        async with httpx.AsyncClient(timeout=10) as client:
            for r in (rngd, h100):
                got = await client.get(f"{r.base_url}/v1/models")
                assert got.status_code == 200
        names = {n["name"] for n in ray.util.list_named_actors(all_namespaces=True)}
        assert {ACTOR_PREFIX + "rngd-0-r0", ACTOR_PREFIX + "h100-0-r0"} <= names

        # a restarted center adopts what the store wants and stops the rest (orphans)
        again = RayExecutor(address=cluster.address)
        report = await again.sync({"h100-0-r0"})
        assert report.adopted == ["h100-0-r0"] and report.stopped == ["rngd-0-r0"]
        assert [r.replica_id for r in again.replicas()] == ["h100-0-r0"]
        assert await again.check("h100-0-r0")
        names = {n["name"] for n in ray.util.list_named_actors(all_namespaces=True)}
        assert ACTOR_PREFIX + "rngd-0-r0" not in names
        await again.shutdown()
        assert not {n for n in ray.util.list_named_actors(all_namespaces=True)} & {
            ACTOR_PREFIX + "h100-0-r0"
        }
    finally:
        signal.signal(signal.SIGTERM, previous)
        await ex.shutdown()


async def test_a_replica_no_node_has_cards_for_is_refused_at_once_with_the_reason(
    cluster,
) -> None:
    ex = RayExecutor(address=cluster.address, place_timeout_s=60.0)
    started = time.monotonic()
    with pytest.raises(CapacityUnavailableError) as info:
        await ex.start(_spec("h100", 4), replica_id="h100-9-r0")  # 4 GPUs: no node has them
    assert time.monotonic() - started < 10.0  # not the placement timeout
    assert info.value.message.startswith("no Ray node has GPU:4, accelerator_type:H100")
    assert info.value.details["resources"]["GPU"] == 4.0
    assert ex.reasons["h100-9-r0"] == info.value.message and ex.replicas() == []
    # the labelled node is the one that must have them (rngd-0: 2 FURIOSA cards)
    with pytest.raises(CapacityUnavailableError) as info:
        await ex.start(_spec("rngd", 4), replica_id="rngd-0-r0")
    assert info.value.message.startswith("no Ray node labelled npucenter-server=rngd-0 has")
    names = {n["name"] for n in ray.util.list_named_actors(all_namespaces=True)}
    assert not names & {ACTOR_PREFIX + "h100-9-r0", ACTOR_PREFIX + "rngd-0-r0"}  # none made
    await ex.shutdown()


async def test_a_replica_whose_node_is_busy_fails_in_bounded_time_with_a_reason(cluster) -> None:
    ex = RayExecutor(address=cluster.address, place_timeout_s=3.0)
    try:
        await ex.start(_spec("rngd", 2), replica_id="rngd-7-r0")  # the head's two cards
        started = time.monotonic()
        with pytest.raises(UpstreamError) as info:  # a node has them, but lends them now
            await ex.start(_spec("rngd", 2), replica_id="rngd-8-r0")
        assert time.monotonic() - started < 20.0
        assert info.value.details["resources"]["resources"] == {"FURIOSA": 2.0}
        assert "rngd-8-r0" in ex.reasons
        names = {n["name"] for n in ray.util.list_named_actors(all_namespaces=True)}
        assert ACTOR_PREFIX + "rngd-8-r0" not in names  # the pending actor was killed
    finally:
        await ex.shutdown()


JOB = r"""
import json, os
report = {"uid": os.getuid(), "cards": os.environ.get("NPUCENTER_CARDS"),
          "devices": os.environ.get("NPUCENTER_FURIOSA_DEVICES"),
          "admin_key": os.environ.get("NPUCENTER_ADMIN_KEY"), "cwd": os.getcwd()}
for name, path in (("data_dir", os.environ["TARGET_DIR"]), ("db", os.environ["TARGET_DB"])):
    try:
        report[name] = "ALLOWED: %d entries" % len(os.listdir(path)) if name == "data_dir" else (
            "ALLOWED: %r" % open(path, "rb").read(8))
    except OSError as exc:
        report[name] = "denied: " + type(exc).__name__
json.dump(report, open(os.environ["NPUCENTER_RESULT_PATH"], "w"))
"""


async def test_a_tenant_job_on_ray_runs_sandboxed_on_the_node_with_its_cards(
    cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    from npucenter.api import create_app
    from npucenter.api.runner import make_job_runner
    from npucenter.executors.ray_jobs import RayJobLauncher
    from npucenter.executors.sandbox import Sandbox
    from npucenter.settings import Settings

    if Sandbox().unavailable_reason() is not None:
        pytest.skip(f"job sandbox unavailable: {Sandbox().unavailable_reason()}")
    monkeypatch.setenv("NPUCENTER_ADMIN_KEY", ADMIN)  # the server's secret, in its environment
    data = tmp_path / "data"
    settings = Settings(data_dir=data, admin_key=ADMIN, executor="ray")
    settings.ensure_data_dir()
    app = create_app(settings)
    db = str(data / "npucenter.db")
    runner = make_job_runner(
        app.state.control, grace_s=1.0, launcher=RayJobLauncher(address=cluster.address)
    )
    try:
        with TestClient(app, headers={"Authorization": f"Bearer {ADMIN}"}) as admin:
            body = {"name": "rngd-0", "device_type": "rngd", "num_cards": 2}
            assert admin.post("/api/servers", json=body).status_code == 201
            assert admin.post("/api/tenants", json={"name": "acme", "kind": "company"}).is_success
            quota = {"tenant": "acme", "device_type": "rngd", "nominal_cards": 2}
            assert admin.put("/api/quotas", json=quota).status_code == 200
            key = admin.post("/api/keys", json={"tenant": "acme"}).json()["key"]
            acme = TestClient(app, headers={"Authorization": f"Bearer {key}"})
            # the targets reach the job as arguments (its environment is allow-listed)
            command = [
                sys.executable,
                "-c",
                f"import os; os.environ.update(TARGET_DIR={str(data)!r}, TARGET_DB={db!r})\n" + JOB,
            ]
            job = {"name": "probe", "kind": "preprocess", "device_type": "rngd", "num_cards": 2}
            r = acme.post("/api/jobs", json=job | {"command": command})
            assert r.status_code == 201, r.text
            job_id = r.json()["id"]
            assert (await runner.tick()).started == [job_id]
            assert await runner.wait_exited(job_id, 90.0) is not None
            await runner.tick()
            done = acme.get(f"/api/jobs/{job_id}").json()
            assert done["state"] == "succeeded", done
            report = acme.get(f"/api/jobs/{job_id}/result").json()
    finally:
        await runner.shutdown()
        app.state.control.db.dispose()
    assert report["cards"] == "0,1" and report["devices"] == "npu:0,npu:1"  # Ray's cards
    assert report["admin_key"] is None and report["cwd"] == "/job"
    assert report["data_dir"].startswith("denied") and report["db"].startswith("denied")
    if os.geteuid() == 0:
        assert report["uid"] not in (0, os.getuid())


def _chat(url: str) -> httpx.Response:
    body = {"model": "llama-3.1-8b", "messages": [{"role": "user", "content": "hi"}]}
    body["max_tokens"] = 4
    headers = {"Authorization": f"Bearer {ADMIN}"}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=30)


def _wait(what: str, check, timeout_s: float = 90.0, every_s: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every_s)


def _actor_names() -> set[str]:
    """replica ids of the center's replica actors Ray still holds a name for (not dead)."""
    return {
        e["name"][len(ACTOR_PREFIX) :]
        for e in ray.util.list_named_actors(all_namespaces=True)
        if e.get("namespace") == "npucenter" and e["name"].startswith(ACTOR_PREFIX)
    }


def _actors() -> dict[str, str]:
    """replica id -> node id of the center's live replica actors (asked of each actor)."""
    out = {}
    for entry in ray.util.list_named_actors(all_namespaces=True):
        name = entry["name"]
        if entry.get("namespace") != "npucenter" or not name.startswith(ACTOR_PREFIX):
            continue
        try:
            actor = ray.get_actor(name, namespace="npucenter")
            info = ray.get(actor.info.remote(), timeout=10)
        except Exception:  # dying or dead: not live
            continue
        if info.get("alive"):
            out[name[len(ACTOR_PREFIX) :]] = info["node_id"]
    return out


def test_up_with_the_ray_executor_serves_and_recovers_from_a_dead_node(
    cluster, tmp_path: Path
) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NPUCENTER_")}
    env |= {"NPUCENTER_ADMIN_KEY": ADMIN, "NPUCENTER_ADMISSION_INTERVAL_S": "1", **LOOPBACK_ENV}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p.endswith("src"))
    args = ("--fleet", str(fleet), "--executor", "ray", "--ray-address", cluster.address)
    if not ray.is_initialized():
        ray.init(address=cluster.address, log_to_driver=False)
    nodes = _node_ids(cluster)
    with running_up(tmp_path / "data", env, *args, "--log-level", "warning") as up:
        _wait("both replicas served", lambda: _chat(up.url).status_code == 200)
        placed = _wait("two replica actors", lambda: (a := _actors()) and len(a) == 2 and a)
        assert placed == {"rngd-0-r0": nodes["head"], "h100-0-r0": nodes["gpu"]}
        with httpx.Client(base_url=up.url, headers={"Authorization": f"Bearer {ADMIN}"}) as api:
            # the store says what Ray runs: the TP-4 replica is placed on cards, not running
            def big() -> dict[str, Any] | None:
                deps = api.get("/api/deployments").json()
                (dep,) = [d for d in deps if d["tp"] == 4]
                return dep if dep["replica_states"][0]["run_state"] == "pending" else None

            stuck = _wait("the TP-4 replica pending", big, timeout_s=30.0)
            reason = stuck["replica_states"][0]["run_reason"]
            assert reason.startswith("no Ray node labelled npucenter-server=h100-0 has GPU:4")

            def running() -> list[dict[str, Any]] | None:  # written at the reconciler's tick
                deps = api.get("/api/deployments").json()
                return deps if sum(d["num_running_replicas"] for d in deps) == 2 else None

            deployments = _wait("two replicas running in the store", running, timeout_s=30.0)
            assert len(placed) == 2 and sum(d["num_placed_replicas"] for d in deployments) == 3
            fleet = {s["name"]: s for s in api.get("/api/servers").json()}
            assert fleet["h100-0"]["num_idle_held_cards"] == 4
            # and it is never billed: the cards' checkpoint bills the two that run only
            rows = api.post("/api/usage/checkpoint").json()
            billed = {r["ref"].split("/")[0] for r in rows if r["device_seconds"] > 0}
            assert f"deployment:{stuck['id']}" not in billed and len(billed) == 2

        cluster.remove_node(cluster.gpu_node, allow_graceful=False)  # the H100 node dies
        moved = _wait(
            "the H100 replica restarted on the spare node",
            lambda: _actors().get("h100-0-r0") == nodes["spare"],
            timeout_s=120.0,
        )
        assert moved
        _wait("serving again", lambda: all(_chat(up.url).status_code == 200 for _ in range(4)))

        # scaling the RNGD deployment to 0 stops its actor (the store is the truth)
        with httpx.Client(base_url=up.url, headers={"Authorization": f"Bearer {ADMIN}"}) as api:
            rngd = next(d for d in api.get("/api/deployments").json() if "rngd" in d["device_type"])
            scaled = api.patch(f"/api/deployments/{rngd['id']}", json={"replicas": 0})
            assert scaled.status_code == 200, scaled.text
        # stopped = its name released (an info call that fails while a node dies is no proof)
        _wait("the RNGD actor stopped", lambda: "rngd-0-r0" not in _actor_names(), timeout_s=60.0)
        _wait("only the H100 actor live", lambda: list(_actors()) == ["h100-0-r0"], timeout_s=30.0)
        time.sleep(3.0)  # and nothing starts it again: the store says 0
        assert "rngd-0-r0" not in _actor_names()
        log = up.log()
    assert not re.search(r"Traceback", log), log[-2000:]
    _wait("actors stopped with the center", lambda: _actors() == {}, timeout_s=30.0)


async def test_a_fine_tune_on_ray_gets_its_inputs_and_returns_its_adapter(
    cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A program job through Ray: the runner's files hook stages the data set and the tiny base
    model, they travel with the run into the job's sandboxed work dir on the h100 node, the LoRA
    trains there, and the adapter comes back and is registered for the tenant."""
    pytest.importorskip("peft")
    from fastapi.testclient import TestClient

    from npucenter.api import create_app
    from npucenter.api.runner import make_job_runner
    from npucenter.executors.ray_jobs import RayJobLauncher
    from npucenter.executors.sandbox import Sandbox
    from npucenter.settings import Settings

    if Sandbox().unavailable_reason() is not None:
        pytest.skip(f"job sandbox unavailable: {Sandbox().unavailable_reason()}")
    monkeypatch.setenv("NPUCENTER_ADMIN_KEY", ADMIN)
    data = tmp_path / "data"
    settings = Settings(data_dir=data, admin_key=ADMIN, executor="ray")
    settings.ensure_data_dir()
    app = create_app(settings)
    runner = make_job_runner(
        app.state.control, grace_s=1.0, launcher=RayJobLauncher(address=cluster.address)
    )
    examples = Path(__file__).resolve().parents[2] / "examples" / "jobs"
    node_runs = Path(tempfile.gettempdir()) / "npucenter-jobs"  # the nodes' run dirs (loopback)
    before = set(node_runs.glob("job-*")) if node_runs.is_dir() else set()
    try:
        with TestClient(app, headers={"Authorization": f"Bearer {ADMIN}"}) as admin:
            body = {"name": "h100-0", "device_type": "h100", "num_cards": 1}
            assert admin.post("/api/servers", json=body).status_code == 201
            assert admin.post("/api/tenants", json={"name": "lab", "kind": "university"}).is_success
            quota = {"tenant": "lab", "device_type": "h100", "nominal_cards": 1}
            assert admin.put("/api/quotas", json=quota).status_code == 200
            key = admin.post("/api/keys", json={"tenant": "lab"}).json()["key"]
            lab = TestClient(app, headers={"Authorization": f"Bearer {key}"})
            content = (examples / "lora-tiny.jsonl").read_text()
            r = lab.post("/api/datasets", json={"name": "tiny", "content": content})
            assert r.status_code == 201, r.text
            spec = {"base_model": "tiny-llama", "dataset": "tiny", "adapter": "ray-tiny"}
            spec |= {"steps": 3, "max_seq_len": 32, "checkpoint_every": 100}
            job = {"name": "ft", "kind": "finetune", "device_type": "h100", "spec": spec}
            r = lab.post("/api/jobs", json=job)
            assert r.status_code == 201, r.text
            job_id = r.json()["id"]
            assert (await runner.tick()).started == [job_id]
            assert await runner.wait_exited(job_id, 240.0) is not None
            await runner.tick()
            done = lab.get(f"/api/jobs/{job_id}").json()
            adapters = lab.get("/api/adapters").json()
    finally:
        await runner.shutdown()
        app.state.control.db.dispose()
    assert done["state"] == "succeeded", done
    assert "step 3/3 loss" in done["log_tail"]
    assert "adapter 'ray-tiny' registered" in done["log_tail"]
    assert [(a["name"], a["source_job_id"]) for a in adapters] == [("ray-tiny", job_id)]
    assert adapters[0]["num_bytes"] > 0
    # the adapter came back from the node into the run dir, where the hook collected it
    assert (data / "jobs" / f"job-{job_id}" / "work" / "adapter" / "adapter_config.json").is_file()
    # the node kept nothing of it (its inputs and outputs travelled with the run)
    assert set(node_runs.glob("job-*")) <= before
