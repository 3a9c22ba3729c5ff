"""Jobs on a Ray cluster, under the same sandbox contract as local jobs.

NOTE(executors): with ``NPUCENTER_EXECUTOR=ray`` the job runner keeps its tick, its store
writes and its bookkeeping, and hands each job's process to :class:`RayJobLauncher`: one actor
per job run, asking for the job's cards under Ray's own resource names (``FURIOSA``, ``RBLN``,
``GPU``), on the node labelled with the job's server when one is. On that node the actor
builds the same :class:`~npucenter.executors.sandbox.Sandbox` from the center's policy
(bubblewrap, own uid, no network by default, allow-listed environment, rlimits), expands the
job's argv with the cards Ray assigned, runs it, and returns its exit code, log tail and
result file. A node that cannot isolate refuses the job (``not_supported``), as a local runner
does. The handle looks like a process to the runner (``poll``, ``returncode``); when the job
ends it writes the log and result next to the runner's own files, so recording the exit is the
same code path. Stopping is bounded: the actor SIGTERMs the job's group, SIGKILLs it after the
grace, and is killed.

A program job's files travel with its run through the runner's :class:`JobFilesHook`, the same
one the local path calls: the runner stages the inputs (data set, base model, ``spec.json``)
into the job's run dir on the center, :func:`pack_tree` ships them with the run (one tar in
Ray's object store), the actor unpacks them into the job's work dir on the node (owned by the
job's uid) before it starts; when the job exits 0 the actor packs the outputs the hook names
(regular files only, no link followed, bounded in size) and the handle unpacks them into the
run dir on the center, where the hook collects them as for a local run (the adapter registered,
the packed data set stored). A run on Ray starts from its inputs: a preempted fine-tune's
checkpoint stays on the node it ran on, so it starts over when admitted again.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import shutil
import stat
import tarfile
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from npucenter.engines import device_family
from npucenter.errors import UpstreamError
from npucenter.executors.ray import RAY_NAMESPACE, RAY_RESOURCE, RayExecutor

__all__ = ["RayJobHandle", "RayJobLauncher", "job_actor_options", "pack_tree", "unpack_tree"]

#: The most bytes of outputs a job's run sends back to the center (an adapter, a packed set).
MAX_RETURN_BYTES = 1024**3

_FAMILY_VISIBLE = {
    "rngd": "NPUCENTER_FURIOSA_DEVICES",
    "rbln": "RBLN_DEVICES",
    "gpu": "CUDA_VISIBLE_DEVICES",
}


def job_actor_options(device_type: str, num_cards: int, job_id: int) -> dict[str, Any]:
    """The ``.options(...)`` of a job's actor: its cards under Ray's names, two threads."""
    family = device_family(device_type)
    options: dict[str, Any] = {
        "name": f"npucenter-job-{job_id}-{uuid.uuid4().hex[:8]}",
        "namespace": RAY_NAMESPACE,
        "num_cpus": 0,
        "max_restarts": 0,
        "max_concurrency": 2,  # run() blocks while the job runs; stop() must get through
    }
    if family == "gpu":
        options["num_gpus"] = float(num_cards)
    else:
        options["resources"] = {RAY_RESOURCE[family]: float(num_cards)}
    return options


def pack_tree(root: Path, names: Sequence[str] = (), *, max_bytes: int | None = None) -> bytes:
    """``names`` under ``root`` (all of it when empty) as one tar; regular files and dirs only.

    A link or another special file is not followed and not packed; :class:`ValueError` when the
    regular files add up to more than ``max_bytes``.
    """
    buffer = io.BytesIO()
    total = 0
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tops = [root / n for n in names] if names else sorted(root.iterdir())
        for top in tops:
            if not top.exists() and not top.is_symlink():
                continue
            for path in _walk(top):
                st = os.lstat(path)
                arcname = str(path.relative_to(root))
                if stat.S_ISDIR(st.st_mode):
                    tar.addfile(_member(arcname, tarfile.DIRTYPE, 0))
                elif stat.S_ISREG(st.st_mode):
                    total += st.st_size
                    if max_bytes is not None and total > max_bytes:
                        raise ValueError(f"the outputs are over {max_bytes} bytes")
                    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
                    with open(fd, "rb") as f:
                        tar.addfile(_member(arcname, tarfile.REGTYPE, st.st_size), f)
    return buffer.getvalue()


def unpack_tree(data: bytes, dest: Path, uid: int | None = None) -> list[str]:
    """Unpack a :func:`pack_tree` tar into ``dest`` (owned by ``uid``); the top names in it.

    Only plain files and dirs inside ``dest`` are made (tarfile's ``data`` filter).
    """
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        members = tar.getmembers()
        if any(not (m.isreg() or m.isdir()) for m in members):
            raise ValueError("a bundle holds plain files and dirs only")
        tar.extractall(dest, filter="data")
    if uid is not None:
        for m in members:
            os.lchown(dest / m.name, uid, uid)
    return sorted({m.name.split("/", 1)[0] for m in members})


def _walk(top: Path) -> list[Path]:
    out = [top]
    if top.is_dir() and not top.is_symlink():
        for base, dirs, files in os.walk(top):  # os.walk does not follow links to dirs
            out += [Path(base) / n for n in sorted((*dirs, *files))]
    return out


def _member(name: str, kind: bytes, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, size
    info.mode = 0o700 if kind == tarfile.DIRTYPE else 0o600
    return info


class _JobProcess:
    """Runs on the chosen node: one job run, in the sandbox, on the cards Ray assigned."""

    def __init__(self) -> None:
        self.proc: Any = None

    def ready(self) -> str:
        import ray

        return str(ray.get_runtime_context().get_node_id())

    def run(
        self,
        job_id: int,
        device_type: str,
        command: Sequence[str],
        job_env: Mapping[str, str],
        policy: Any,
        inputs: bytes | None = None,
        outputs: Sequence[str] = (),
    ) -> dict[str, Any]:
        import tempfile

        import ray

        from npucenter.engines.furiosa import furiosa_devices_arg
        from npucenter.errors import NotSupportedError
        from npucenter.executors.jobs import (
            ENV_CARDS,
            ENV_RESULT_PATH,
            _read_result,
            _read_tail,
            expand_job_argv,
        )
        from npucenter.executors.procs import spawn_group
        from npucenter.executors.sandbox import Sandbox
        from npucenter.settings import environ

        family = device_family(device_type)
        ids = [
            str(i)
            for i in ray.get_runtime_context().get_accelerator_ids().get(RAY_RESOURCE[family], [])
        ]
        root = Path(tempfile.gettempdir()) / "npucenter-jobs"
        root.mkdir(mode=0o700, exist_ok=True)
        os.chmod(root, 0o700)
        run_dir = root / f"job-{job_id}-{uuid.uuid4().hex[:8]}"
        run_dir.mkdir(mode=0o700)
        sandbox = Sandbox(policy, hidden=[root])
        try:
            sandbox.check()
        except NotSupportedError as exc:
            return {"refused": f"{exc.message}; {exc.hint}"}
        box = sandbox.prepare(job_id, run_dir / "work")
        if inputs is not None:  # staged by the runner's files hook on the center
            unpack_tree(inputs, box.work_dir, box.uid)
        env = dict(job_env)
        inherited = environ()
        if ids:  # the cards Ray assigned are the job's
            env[ENV_CARDS] = ",".join(ids)
            visible = _FAMILY_VISIBLE[family]
            if family == "rngd":
                env[visible] = furiosa_devices_arg(tuple(int(i) for i in ids if i.isdigit()))
            else:
                env[visible] = inherited.get(visible, ",".join(ids))
        env[ENV_RESULT_PATH] = box.inside("result.json")
        env["HOME"] = box.inside_work_dir
        if box.isolated:
            env["TMPDIR"] = "/tmp"
        argv = sandbox.command(expand_job_argv(command, env), box)
        log_path = run_dir / "output.log"
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with open(fd, "wb") as out:
            self.proc = spawn_group(
                argv, env=env, out=out, cwd=box.work_dir, preexec=sandbox.preexec(box)
            )
        code = self.proc.wait()
        document, note = _read_result(box.work_dir / "result.json")
        returned = None
        if code == 0 and outputs:  # back to the center, which collects them as a local run's
            try:
                returned = pack_tree(box.work_dir, outputs, max_bytes=MAX_RETURN_BYTES)
            except (OSError, ValueError) as exc:
                note = f"{note}; outputs not returned: {exc}".strip("; ")
        outcome = {
            "exit_code": code,
            "log_tail": _read_tail(log_path),
            "result": document,
            "note": note,
            "outputs": returned,
            "node_id": ray.get_runtime_context().get_node_id(),
            "cards": ids,
        }
        shutil.rmtree(run_dir, ignore_errors=True)  # its inputs and outputs went back with it
        return outcome

    def stop(self, grace_s: float) -> None:
        import signal
        import subprocess

        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)


class RayJobHandle:
    """What the job runner holds for a job on Ray: ``poll()``/``returncode`` like a process."""

    pid = -1  # no local process

    def __init__(
        self,
        ray: Any,
        actor: Any,
        ref: Any,
        *,
        log_path: Path,
        result_path: Path,
        outputs_dir: Path | None = None,
    ) -> None:
        self._ray = ray
        self.outputs_dir = outputs_dir  # where the job's returned outputs are unpacked
        self._actor = actor
        self._ref = ref
        self.log_path = log_path
        self.result_path = result_path
        self.returncode: int | None = None
        self.refused: str | None = None  # the node could not isolate it
        self.outcome: dict[str, Any] = {}

    def poll(self) -> int | None:
        """The exit code once the job's run returned (and its files written here), else None."""
        if self.returncode is not None:
            return self.returncode
        ready, _ = self._ray.wait([self._ref], timeout=0)
        if not ready:
            return None
        try:
            outcome = self._ray.get(self._ref)
        except Exception as exc:  # the node or the actor died under it
            outcome = {"exit_code": -9, "log_tail": f"[npucenter] the Ray run was lost: {exc}"}
        self.outcome = outcome
        self.refused = outcome.get("refused")
        tail = outcome.get("log_tail", "")
        if outcome.get("note"):
            tail = f"{tail}\n[npucenter] {outcome['note']}".strip()
        self.log_path.write_text(tail)
        if outcome.get("result") is not None:
            self.result_path.write_text(json.dumps(outcome["result"]))
        if outcome.get("outputs") and self.outputs_dir is not None:
            try:
                unpack_tree(outcome["outputs"], self.outputs_dir)
            except (OSError, ValueError, tarfile.TarError) as exc:  # collect says it is missing
                self.log_path.write_text(f"{tail}\n[npucenter] outputs not unpacked: {exc}")
        self.returncode = int(outcome.get("exit_code", 0) if not self.refused else 0)
        with contextlib.suppress(Exception):
            self._ray.kill(self._actor, no_restart=True)
        return self.returncode

    async def terminate(self, grace_s: float, call_timeout_s: float = 10.0) -> None:
        """SIGTERM (on the node), SIGKILL after ``grace_s``, then kill the actor; bounded."""
        if self.poll() is not None:
            return
        with contextlib.suppress(Exception):
            ref = self._actor.stop.remote(grace_s)
            await asyncio.wait_for(asyncio.wrap_future(ref.future()), grace_s + call_timeout_s)
        with contextlib.suppress(Exception):
            self._ray.kill(self._actor, no_restart=True)
        for _ in range(int(call_timeout_s / 0.05)):
            if self.poll() is not None:
                return
            await asyncio.sleep(0.05)
        self.returncode = -9
        self.log_path.write_text("[npucenter] killed on Ray")

    def kill_now(self) -> None:
        """Kill the actor at once (the ``atexit`` hook)."""
        with contextlib.suppress(Exception):
            self._ray.kill(self._actor, no_restart=True)


class RayJobLauncher:
    """Starts job runs as Ray actors (``JobRunner(launcher=...)``)."""

    def __init__(
        self,
        *,
        address: str | None = "auto",
        connect_timeout_s: float = 30.0,
        place_timeout_s: float = 60.0,
    ) -> None:
        self._ray_executor = RayExecutor(address=address, connect_timeout_s=connect_timeout_s)
        self.place_timeout_s = place_timeout_s

    async def connect(self) -> Any:
        """Ray, connected (bounded; the server's signal handlers kept)."""
        return await self._ray_executor._ensure_ray()

    async def spawn(
        self,
        *,
        job_id: int,
        device_type: str,
        num_cards: int,
        server: str | None,
        command: Sequence[str],
        job_env: Mapping[str, str],
        policy: Any,
        log_path: Path,
        result_path: Path,
        stage_dir: Path | None = None,
        outputs: Sequence[str] = (),
    ) -> RayJobHandle:
        """One actor for one run of the job; returns at once (the run goes on there).

        ``stage_dir``: the job's inputs staged on the center, shipped to its work dir on the
        node; ``outputs``: what comes back from there into ``stage_dir`` when it exits 0.
        """
        ray = await self.connect()
        inputs = None
        if stage_dir is not None and stage_dir.is_dir():
            inputs = await asyncio.to_thread(pack_tree, stage_dir)
        from npucenter.executors.ray import SERVER_LABEL, _labelled_servers

        options = job_actor_options(device_type, num_cards, job_id)
        if server and server in await asyncio.to_thread(_labelled_servers, ray):
            options["label_selector"] = {SERVER_LABEL: server}
        try:
            actor = ray.remote(_JobProcess).options(**options).remote()
        except Exception as exc:
            raise UpstreamError(f"ray: job {job_id} could not start: {exc}") from exc
        try:
            ref = actor.ready.remote()
            await asyncio.wait_for(asyncio.wrap_future(ref.future()), self.place_timeout_s)
        except Exception as exc:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
            wants = {
                k: options[k] for k in ("resources", "num_gpus", "label_selector") if k in options
            }
            raise UpstreamError(
                f"ray: no node took job {job_id} ({wants}) within {self.place_timeout_s:g} s",
                details={"resources": wants},
            ) from exc
        ref = actor.run.remote(
            job_id, device_type, list(command), dict(job_env), policy, inputs, list(outputs)
        )
        return RayJobHandle(
            ray, actor, ref, log_path=log_path, result_path=result_path, outputs_dir=stage_dir
        )
