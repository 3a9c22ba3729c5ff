"""Jobs as local subprocesses: start what admission admitted, record how it ended, kill what lost its cards.

NOTE(executors): the store owns every job's state; the runner only holds the processes. One
tick (periodic, and at once after every change the API commits): (1) an admission cycle, so
queued jobs are admitted when capacity frees; (2) a process whose job no longer runs under this
run (preempted, cancelled, failed by an admin, re-admitted) is killed: SIGTERM to its process
group, SIGKILL after ``grace_s``; (3) an exited process is recorded: running -> succeeded |
failed with its exit code and a bounded log tail, its result file attached, its cards billed
(with measured energy when a telemetry reader sees the cards); (4) admitted jobs are started:
admitted -> running is written first, then the command is spawned (argv, no shell) with the
job's cards in its environment, inside the job's sandbox (:mod:`npucenter.executors.sandbox`:
its own uid, filesystem view, namespaces, allow-listed environment and limits; where jobs
cannot be isolated they are refused with ``not_supported`` unless the operator opted out); a
command that cannot start fails the job. A job whose work dir outgrows ``disk_gb`` is killed
and failed with ``limit_exceeded``. A job with only a
container image fails with ``not_supported``: a container executor (Ray) is the way to run
images. Children never outlive the runner: the guards of :mod:`npucenter.executors.local`
(process groups, PR_SET_PDEATHSIG with SIGKILL, an atexit hook; spawn from a thread that
outlives them), bubblewrap's ``--die-with-parent``, and, should all of them fail (a SIGKILLed
center under a setuid bubblewrap), the run's process mark (:mod:`npucenter.executors.runmark`):
a restarted runner stops every process a dead center left running before it queues the job
again, so no job ever runs twice at once.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import errno
import json
import logging
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from npucenter.clock import Clock, SystemClock
from npucenter.engines.base import device_family
from npucenter.engines.furiosa import furiosa_devices_arg
from npucenter.errors import NotSupportedError, NpuCenterError
from npucenter.executors.procs import Ticker, kill_now, spawn_group
from npucenter.executors.procs import terminate as _terminate
from npucenter.executors.runmark import (
    ENV_RUN_TOKEN,
    clear_mark,
    find_marks,
    has_family,
    read_mark,
    stop_family,
    write_mark,
)
from npucenter.executors.sandbox import ENV_ALLOW, JobBox, Sandbox, directory_bytes
from npucenter.settings import environ
from npucenter.store.keys import job_key_name
from npucenter.store.models import Job
from npucenter.store.repository import MAX_LOG_TAIL_CHARS, MAX_RESULT_BYTES, Repository

__all__ = [
    "ENV_API_KEY",
    "ENV_CARDS",
    "ENV_JOB_ID",
    "ENV_RESULT_PATH",
    "RUNNER_NAME",
    "VISIBLE_DEVICES_ENV",
    "JobFilesHook",
    "JobRunner",
    "TickReport",
    "expand_job_argv",
    "job_environment",
]

log = logging.getLogger(__name__)

RUNNER_NAME = "local"
ENV_JOB_ID = "NPUCENTER_JOB_ID"
ENV_CARDS = "NPUCENTER_CARDS"  # the card indexes on the job's server, e.g. "0,1"
ENV_RESULT_PATH = "NPUCENTER_RESULT_PATH"  # a JSON object written here becomes the job's result
ENV_API_KEY = "NPUCENTER_API_KEY"  # the run's own key (scope "job"): /v1 and its result only
#: The visible-devices variable of each device family, as the engines launch their servers
#: (engines/vllm.py: CUDA_VISIBLE_DEVICES, engines/rbln.py: RBLN_DEVICES). furiosa-llm takes
#: ``--devices npu:0,npu:1`` instead, given as NPUCENTER_FURIOSA_DEVICES.
VISIBLE_DEVICES_ENV: Mapping[str, str] = {
    "gpu": "CUDA_VISIBLE_DEVICES",
    "rbln": "RBLN_DEVICES",
    "rngd": "NPUCENTER_FURIOSA_DEVICES",
}
_NUM_TAIL_LINES = 64
_VAR = re.compile(r"\$\(([A-Z_][A-Z0-9_]*)\)|\$\{([A-Z_][A-Z0-9_]*)\}|\$([A-Z_][A-Z0-9_]*)")
_LIVE_RUNNERS: weakref.WeakSet[JobRunner] = weakref.WeakSet()


_EXPANDABLE = frozenset(
    {
        ENV_JOB_ID,
        ENV_CARDS,
        ENV_RESULT_PATH,
        "NPUCENTER_JOB_KIND",
        "NPUCENTER_DEVICE_TYPE",
        "NPUCENTER_SERVER",
        "NPUCENTER_NUM_CARDS",
        *VISIBLE_DEVICES_ENV.values(),
    }
)


class JobFilesHook(Protocol):
    """Inputs in, outputs out: what the runner calls around a job (``artifacts.JobFiles``).

    On Ray the same calls run on the center around the run: inputs staged in the run dir go
    with it to the node, the names in ``outputs`` come back from there (``ray_jobs``).
    """

    outputs: tuple[str, ...]  # what :meth:`collect` reads, as names under the work dir

    def stage(self, job_id: int, work_dir: Path, uid: int | None) -> None:
        """Put the job's inputs into ``work_dir`` (owned by ``uid``) before it starts."""
        ...

    def collect(self, repo: Repository, job: Job, work_dir: Path) -> str:
        """Keep the outputs of a job that exited 0 (raises when they are not valid); a note."""
        ...


@dataclass(slots=True)
class TickReport:
    """What one tick did (job ids)."""

    started: list[int] = field(default_factory=list)
    finished: list[int] = field(default_factory=list)  # succeeded or failed after running
    refused: list[int] = field(default_factory=list)  # failed without running (image, no start)
    killed: list[int] = field(default_factory=list)  # lost their cards (preempted, cancelled)
    waiting: list[int] = field(default_factory=list)  # admitted on cards an engine still holds


@dataclass(frozen=True, slots=True, kw_only=True)
class _JobView:
    job_id: int
    state: str
    kind: str
    device_type: str
    image: str | None
    command: tuple[str, ...]
    admitted_at_s: float | None
    runner: str | None
    server: str | None
    cards: tuple[int, ...]


@dataclass(slots=True, kw_only=True)
class _Run:
    view: _JobView
    proc: Any  # subprocess.Popen, or a handle of a run elsewhere (ray_jobs.RayJobHandle)
    box: JobBox
    log_path: Path
    result_path: Path  # on the host (in the job's work dir)
    last_sample_s: float
    over_limit: str | None = None  # why the runner killed it (a limit), if it did
    last_power_w: float | None = None
    energy_j: float | None = None  # measured, when telemetry sees the cards
    key_id: int | None = None  # the run's own API key (revoked when the run ends)

    def key_ids(self) -> list[int]:
        return [] if self.key_id is None else [self.key_id]


@dataclass(frozen=True, slots=True, kw_only=True)
class _JobKey:
    """A run's own API key: made when it starts, in its environment only, revoked at its end."""

    key_id: int
    secret: str = field(repr=False)

    def environment(self) -> dict[str, str]:
        # the CLI (`npucenter bench run`) and OpenAI clients read these
        return {ENV_API_KEY: self.secret, "OPENAI_API_KEY": self.secret}


def job_environment(
    view_id: int,
    *,
    kind: str,
    device_type: str,
    server: str | None,
    cards: Sequence[int],
    result_path: Path | str,
    base: Mapping[str, str] | None = None,
    allow: Sequence[str] = (),
) -> dict[str, str]:
    """The environment of a job's process: an allow-list of the server's, plus the job's cards.

    Only the names in :data:`~npucenter.executors.sandbox.ENV_ALLOW` and ``allow`` are taken
    from ``base`` (default: this process's environment), and never an ``NPUCENTER_*`` one: no secret, no
    database URL, no setting of the server reaches a tenant's job.
    """
    names = set(ENV_ALLOW) | set(allow)
    env = {
        k: v
        for k, v in (environ() if base is None else base).items()
        if k in names and not k.startswith("NPUCENTER_")
    }
    indexes = ",".join(str(i) for i in cards)
    env.update(
        {
            ENV_JOB_ID: str(view_id),
            "NPUCENTER_JOB_KIND": kind,
            "NPUCENTER_DEVICE_TYPE": device_type,
            "NPUCENTER_SERVER": server or "",
            ENV_CARDS: indexes,
            "NPUCENTER_NUM_CARDS": str(len(cards)),
            ENV_RESULT_PATH: str(result_path),
        }
    )
    family = device_family(device_type)
    env[VISIBLE_DEVICES_ENV[family]] = (
        furiosa_devices_arg(tuple(cards)) if family == "rngd" else indexes
    )
    return env


def expand_job_argv(argv: Sequence[str], job_env: Mapping[str, str]) -> list[str]:
    """Put the job's own variables into its argv: ``$(NAME)``, ``${NAME}`` or ``$NAME``.

    There is no shell, so this is how a command names its result path or cards, e.g.
    ``--json $(NPUCENTER_RESULT_PATH)`` (as Kubernetes expands ``$(VAR)`` in a container's
    args). Only NPUCENTER_* names the runner sets and the visible-devices variable are expanded;
    anything else is left as written.
    """

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        return job_env.get(name, match.group(0)) if name in _EXPANDABLE else match.group(0)

    return [_VAR.sub(one, arg) for arg in argv]


class JobRunner:
    """Runs the center's admitted jobs as local processes (the embedded default).

    Args:
        tx: opens one store transaction as a Repository (``ControlPlane.tx``).
        admit: runs one admission cycle (``lambda: run_admission(control)``).
        work_dir: each job runs in ``work_dir/job-<id>`` (log, result file).
        interval_s: seconds between periodic ticks (:meth:`wake` ticks at once).
        grace_s: SIGTERM to SIGKILL.
        telemetry: an optional reader of this node's cards (``npucenter.telemetry``); when it
            sees a job's cards, the job's ledger row carries their measured energy.
        clock: monotonic time for energy integration (injected in tests).
        sandbox: isolates each job (default: bubblewrap with the default policy, the work
            dir's parent hidden); jobs are refused when it cannot isolate them.
        launcher: runs each job's process elsewhere (a Ray cluster) under the same sandbox.
        busy_cards: (server, card index) still held by engines (running or stopping): an
            admitted job on one of them waits, so no job starts on a card a replica still holds.
        files: copies a job's inputs into its work dir before it starts and collects its
            outputs when it succeeded (:class:`JobFilesHook`; program jobs, issue 14; on Ray
            the inputs go with the run to the node and the outputs come back).
        job_keys: give each run a key of its own (scope ``job``: the gateway's /v1 as its
            tenant, and its own result) in ``NPUCENTER_API_KEY``/``OPENAI_API_KEY``, revoked
            when the run ends; default: where the job can reach the gateway (the host's
            network, no isolation, or Ray).
    """

    def __init__(
        self,
        *,
        tx: Callable[[], AbstractContextManager[Repository]],
        admit: Callable[[], object],
        work_dir: str | Path,
        interval_s: float = 2.0,
        grace_s: float = 5.0,
        telemetry: Any | None = None,
        clock: Clock | None = None,
        sandbox: Sandbox | None = None,
        launcher: Any | None = None,
        busy_cards: Callable[[], set[tuple[str, int]]] | None = None,
        files: JobFilesHook | None = None,
        job_keys: bool | None = None,
    ) -> None:
        self.files = files
        self._job_keys = job_keys
        self._tx = tx
        self._admit = admit
        self.work_dir = Path(work_dir)
        self.interval_s = interval_s
        self.grace_s = grace_s
        self.telemetry = telemetry
        self.clock = clock or SystemClock()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.work_dir, 0o700)  # jobs' dirs: nobody but the runner walks in
        self.sandbox = sandbox or Sandbox(hidden=(self.work_dir.parent,))
        # None: local processes; else jobs run elsewhere (executors.ray_jobs.RayJobLauncher),
        # each in a sandbox built there from the same policy
        self.launcher = launcher
        self.busy_cards = busy_cards
        self._runs: dict[int, _Run] = {}
        self._ticker = Ticker("job runner", log)
        _LIVE_RUNNERS.add(self)

    @property
    def gives_keys(self) -> bool:
        """Whether each run gets a key of its own (default: where a job can reach the gateway)."""
        if self._job_keys is not None:
            return self._job_keys
        policy = self.sandbox.policy
        return self.launcher is not None or not self.sandbox.enabled or policy.network == "host"

    # --- life cycle ---------------------------------------------------------------------
    async def run_forever(self) -> None:
        """Recover, then tick every ``interval_s`` (or at once when woken) until cancelled."""
        self._ticker.bind()
        await self.recover()
        await self._ticker.run_forever(self.tick, lambda: self.interval_s, quiet=(NpuCenterError,))

    def wake(self) -> None:
        """Tick as soon as possible (thread-safe; the API calls it after every change)."""
        self._ticker.wake()

    async def recover(self) -> list[int]:
        """Requeue jobs a previous runner left ``running`` (the center stopped under them).

        Any process such a runner left alive (its process mark names it) is stopped first,
        so the requeued run never overlaps the old one.
        """
        stuck = await asyncio.to_thread(self._stop_orphans)
        return await asyncio.to_thread(self._requeue_orphaned, stuck)

    async def shutdown(self) -> list[int]:
        """Kill every process (SIGTERM, then SIGKILL) and requeue its job; returns their ids."""
        runs = list(self._runs.values())
        self._runs.clear()
        await asyncio.gather(*(self._stop_proc(r.proc) for r in runs))
        for run in runs:
            await asyncio.to_thread(_forget, run)
            await asyncio.to_thread(self._revoke, run.key_ids())
        ids = [r.view.job_id for r in runs]
        if ids:
            await asyncio.to_thread(self._requeue, ids, "the center stopped while it ran")
        return ids

    async def wait_exited(self, job_id: int, timeout_s: float = 30.0) -> int | None:
        """Wait (bounded) until the job's process exits; its exit code, or None if still alive."""
        run = self._runs.get(job_id)
        if run is None:
            return None
        deadline = time.monotonic() + timeout_s
        while run.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return run.proc.poll()

    def running_pids(self) -> dict[int, int]:
        """job id -> pid of the processes this runner holds."""
        return {job_id: run.proc.pid for job_id, run in self._runs.items()}

    def kill_all_now(self) -> None:
        """Synchronously SIGTERM, then SIGKILL, every live child (the ``atexit`` hook)."""
        kill_now(r.proc for r in self._runs.values() if isinstance(r.proc, subprocess.Popen))
        for run in self._runs.values():
            if not isinstance(run.proc, subprocess.Popen):
                run.proc.kill_now()
            elif run.proc.poll() is not None:
                _forget(run)
        with contextlib.suppress(Exception):  # the store may be gone at exit: recover() revokes
            self._revoke([k for r in self._runs.values() for k in r.key_ids()])

    # --- one tick -----------------------------------------------------------------------
    async def tick(self) -> TickReport:
        """Admit, kill what lost its cards, record what exited, start what was admitted."""
        async with self._ticker.bind():
            report = TickReport()
            await asyncio.to_thread(self._admit)
            views = await asyncio.to_thread(self._load)
            await self._kill_moved_on(views, report)
            await self._enforce_disk()
            await self._sample_power()
            exited = [r for r in self._runs.values() if r.proc.poll() is not None]
            for run in exited:
                del self._runs[run.view.job_id]
                await asyncio.to_thread(_forget, run)
                await asyncio.to_thread(self._revoke, run.key_ids())
                if await asyncio.to_thread(self._record_exit, run):
                    report.finished.append(run.view.job_id)
            if exited:  # their cards are free: admit again before starting
                await asyncio.to_thread(self._admit)
                views = await asyncio.to_thread(self._load)
            for view in views.values():
                if view.state == "admitted" and view.job_id not in self._runs:
                    await self._start(view, report)
            return report

    async def _kill_moved_on(self, views: dict[int, _JobView], report: TickReport) -> None:
        doomed: list[_Run] = []
        for job_id, run in list(self._runs.items()):
            view = views.get(job_id)
            if (
                view is not None
                and view.state == "running"
                and view.admitted_at_s == run.view.admitted_at_s
            ):
                continue
            del self._runs[job_id]
            doomed.append(run)
        await asyncio.gather(*(self._stop_proc(run.proc) for run in doomed))
        for run in doomed:
            await asyncio.to_thread(_forget, run)
            await asyncio.to_thread(self._revoke, run.key_ids())
            report.killed.append(run.view.job_id)
            log.info("killed job %d (pid %d): it lost its cards", run.view.job_id, run.proc.pid)

    async def _enforce_disk(self) -> None:
        limit_gb = self.sandbox.policy.limits.disk_gb
        if limit_gb is None or not self._runs:
            return
        for run in list(self._runs.values()):
            if run.over_limit is not None or run.proc.poll() is not None:
                continue
            if not isinstance(run.proc, subprocess.Popen):
                continue  # on a Ray node: its rlimits hold there (file size), not this check
            used = await asyncio.to_thread(directory_bytes, run.box.work_dir)
            if used > limit_gb * 1024**3:
                run.over_limit = (
                    f"its work dir grew to {used / 1024**3:.2f} GB, over the {limit_gb:g} GB limit"
                )
                log.warning("job %d killed: %s", run.view.job_id, run.over_limit)
                await self._stop_proc(run.proc)

    async def _stop_proc(self, proc: Any) -> None:
        if isinstance(proc, subprocess.Popen):
            await _terminate(proc, self.grace_s)
        else:
            await proc.terminate(self.grace_s)

    async def _start(self, view: _JobView, report: TickReport) -> None:
        if self.busy_cards is not None and view.server is not None:
            held = self.busy_cards() & {(view.server, card) for card in view.cards}
            if held:
                log.info("job %d waits: an engine still holds cards %s", view.job_id, sorted(held))
                report.waiting.append(view.job_id)
                return
        if view.command and self.sandbox.enabled and self.launcher is None:
            try:
                await asyncio.to_thread(self.sandbox.check)
            except NotSupportedError as exc:
                if await asyncio.to_thread(
                    self._fail_unstarted, view, exc.code, f"{exc.message}; {exc.hint}"
                ):
                    report.refused.append(view.job_id)
                return
        if not view.command:
            err = NotSupportedError(
                f"the container image {view.image!r} on the local job runner",
                "it starts commands as local processes and cannot run images",
                hint="give the job a command (argv), or run the center with a container "
                "executor (Ray; see docs/control-plane.md)",
            )
            if await asyncio.to_thread(
                self._fail_unstarted, view, err.code, f"{err.message}; {err.hint}"
            ):
                report.refused.append(view.job_id)
            return
        started, key = await asyncio.to_thread(self._mark_running, view)
        if not started:
            return
        try:
            if self.files is not None:
                await asyncio.to_thread(self._stage, view)  # copies (a model): off the loop
            if self.launcher is None:
                run = self._spawn(view, key)
            else:
                run = await self._spawn_remote(view, key)
        except (OSError, NpuCenterError) as exc:
            reason = f"the command could not start: {exc}"
            await asyncio.to_thread(self._fail_running, view, "cannot_start", reason)
            if key is not None:
                await asyncio.to_thread(self._revoke, [key.key_id])
            report.refused.append(view.job_id)
            return
        self._runs[view.job_id] = run
        report.started.append(view.job_id)

    # --- processes (event-loop thread) ----------------------------------------------------
    def _run_dir(self, view: _JobView) -> Path:
        """The job's run directory ``job-<id>/`` (created, mode 0700)."""
        run_dir = self.work_dir / f"job-{view.job_id}"
        run_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(run_dir, 0o700)
        return run_dir

    def _environment(self, view: _JobView, box: JobBox) -> dict[str, str]:
        """The job's environment (its result path as seen from inside ``box``)."""
        return job_environment(
            view.job_id,
            kind=view.kind,
            device_type=view.device_type,
            server=view.server,
            cards=view.cards,
            result_path=box.inside("result.json"),
            allow=self.sandbox.policy.env_allow,
        )

    def _spawn(self, view: _JobView, key: _JobKey | None = None) -> _Run:
        # job-<id>/ is the runner's (the log); job-<id>/work/ is the job's own, its only
        # writable place; the runner never follows a link the job may have left there
        run_dir = self._run_dir(view)
        box = self.sandbox.prepare(view.job_id, run_dir / "work")
        log_path, result_path = run_dir / "output.log", box.work_dir / "result.json"
        result_path.unlink(missing_ok=True)  # a result of an earlier (preempted) run
        env = self._environment(view, box)
        env[ENV_RUN_TOKEN] = secrets.token_hex(8)
        env["HOME"] = box.inside_work_dir
        if box.isolated:
            env["TMPDIR"] = "/tmp"  # its own, size-bounded
        command = expand_job_argv(view.command, env)  # never its key: not an expandable name
        if key is not None:
            env.update(key.environment())
        if box.isolated:
            _must_exist(command[0], env.get("PATH", ""), box)
        argv = self.sandbox.command(command, box)
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with open(fd, "wb") as out:
            proc = spawn_group(
                argv,
                env=env,
                out=out,
                cwd=box.work_dir,
                preexec=self.sandbox.preexec(box),
                death_signal=signal.SIGKILL,  # a tenant's code may ignore SIGTERM
            )
        # what a restarted runner reads should this one die without stopping the job
        write_mark(
            run_dir,
            job_id=view.job_id,
            pid=proc.pid,
            admitted_at_s=view.admitted_at_s,
            run_token=env[ENV_RUN_TOKEN],
        )
        log.info(
            "started job %d (pid %d, %s): %s",
            view.job_id,
            proc.pid,
            f"sandboxed, uid {box.uid}" if box.isolated else "NOT isolated",
            view.command[0],
        )
        return _Run(
            view=view,
            proc=proc,
            box=box,
            log_path=log_path,
            result_path=result_path,
            last_sample_s=self.clock.now_s(),
            key_id=None if key is None else key.key_id,
        )

    async def _spawn_remote(self, view: _JobView, key: _JobKey | None = None) -> _Run:
        run_dir = self._run_dir(view)
        box = JobBox(
            job_id=view.job_id,
            work_dir=run_dir / "work",  # on the node, not here
            inside_work_dir="/job",
            uid=None,
            isolated=self.sandbox.enabled,
        )
        env = self._environment(view, box)
        if key is not None:
            env.update(key.environment())
        log_path, result_path = run_dir / "output.log", run_dir / "result.json"
        result_path.unlink(missing_ok=True)
        handle = await self.launcher.spawn(  # type: ignore[union-attr]
            job_id=view.job_id,
            device_type=view.device_type,
            num_cards=len(view.cards),
            server=view.server,
            command=list(view.command),
            job_env=env,
            policy=self.sandbox.policy,
            log_path=log_path,
            result_path=result_path,
            stage_dir=box.work_dir if self.files is not None else None,
            outputs=self.files.outputs if self.files is not None else (),
        )
        log.info("started job %d on Ray: %s", view.job_id, view.command[0])
        return _Run(
            view=view,
            proc=handle,
            box=box,
            log_path=log_path,
            result_path=result_path,
            last_sample_s=self.clock.now_s(),
            key_id=None if key is None else key.key_id,
        )

    def _stage(self, view: _JobView) -> None:
        # Its inputs, copied into its work dir (it never sees the data dir); a worker thread.
        assert self.files is not None
        run_dir = self._run_dir(view)
        if self.launcher is not None:  # staged here, shipped with the run (ray_jobs)
            (run_dir / "work").mkdir(mode=0o700, exist_ok=True)
            self.files.stage(view.job_id, run_dir / "work", None)
            return
        box = self.sandbox.prepare(view.job_id, run_dir / "work")
        self.files.stage(view.job_id, box.work_dir, box.uid)

    async def _sample_power(self) -> None:
        if self.telemetry is None or not self._runs:
            return
        try:
            samples = await self.telemetry.sample()
        except NpuCenterError as exc:
            log.warning("job power not measured this tick: %s", exc)
            return
        now = self.clock.now_s()
        for run in self._runs.values():
            family = device_family(run.view.device_type)
            seen = [
                s.power_w
                for s in samples
                if device_family(s.device_type) == family and _index(s.source_id) in run.view.cards
            ]
            if len(seen) < len(run.view.cards):
                continue  # the reader does not see every card of the job: stay modelled
            power_w = float(sum(seen))
            run.energy_j = (run.energy_j or 0.0) + power_w * max(0.0, now - run.last_sample_s)
            run.last_sample_s, run.last_power_w = now, power_w

    # --- store (worker threads) -----------------------------------------------------------
    def _load(self) -> dict[int, _JobView]:
        with self._tx() as repo:
            jobs = repo.list_jobs(state="admitted") + repo.list_jobs(state="running")
            ours = set(self._runs) - {j.id for j in jobs}
            jobs += [repo.get_job(i) for i in sorted(ours) if _exists(repo, i)]
            return {j.id: _view(repo, j) for j in jobs}

    def _mark_running(self, view: _JobView) -> tuple[bool, _JobKey | None]:
        # admitted -> running, and (where the job may reach the gateway) its own key, made in
        # the same transaction: the key exists only while a run does
        with self._guard(view.job_id, "start"), self._tx() as repo:
            job = repo.get_job(view.job_id)
            if job.state != "admitted" or job.admitted_at_s != view.admitted_at_s:
                return False, None
            repo.start_job_run(
                job,
                runner=RUNNER_NAME,
                reason=f"started on {view.server} cards {','.join(map(str, view.cards))}"
                if view.cards
                else "started on the host (no card)",  # a host job (policy/admission/host.py)
            )
            if not self.gives_keys:
                return True, None
            row, secret = repo.create_key(
                tenant_id=job.tenant_id, scope="job", name=job_key_name(job.id)
            )
            return True, _JobKey(key_id=row.id, secret=secret)
        return False, None

    def _revoke(self, key_ids: Sequence[int]) -> None:
        # the run ended (exited, killed, requeued): its key stops authenticating at once (the
        # gateway's key cache forgets it within seconds)
        for key_id in key_ids:
            with self._guard(key_id, "revoke its key"), self._tx() as repo:
                repo.revoke_key(key_id)

    def _fail_unstarted(self, view: _JobView, code: str, reason: str) -> bool:
        with self._guard(view.job_id, "refuse"), self._tx() as repo:
            job = repo.get_job(view.job_id)
            if job.state != "admitted" or job.admitted_at_s != view.admitted_at_s:
                return False
            repo.finish_job_run(job, exit_code=None, failure_code=code, failure_reason=reason)
            return True
        return False

    def _fail_running(self, view: _JobView, code: str, reason: str) -> None:
        with self._guard(view.job_id, "fail"), self._tx() as repo:
            job = repo.get_job(view.job_id)
            if job.state == "running":
                repo.finish_job_run(job, exit_code=None, failure_code=code, failure_reason=reason)

    def _record_exit(self, run: _Run) -> bool:
        code: int | None = run.proc.returncode
        tail = _read_tail(run.log_path)
        document, note = _read_result(run.result_path)
        if note:
            tail = f"{tail}\n[npucenter] {note}".strip()
        energy_j = run.energy_j
        if energy_j is not None and run.last_power_w is not None:
            energy_j += run.last_power_w * max(0.0, self.clock.now_s() - run.last_sample_s)
        with self._guard(run.view.job_id, "record"), self._tx() as repo:
            job = repo.get_job(run.view.job_id)
            if job.state != "running" or job.admitted_at_s != run.view.admitted_at_s:
                return False  # it moved on (cancelled, preempted) while it exited
            if document is not None:
                try:
                    repo.set_job_result(job, document, source="runner")
                except NpuCenterError as exc:  # too large: the run still ends
                    tail = f"{tail}\n[npucenter] result file ignored: {exc}".strip()
            reason = f"the command was killed by signal {-code}" if code and code < 0 else None
            failure_code = None
            refused = getattr(run.proc, "refused", None)
            if refused:  # the Ray node it landed on cannot isolate jobs
                code, reason, failure_code = None, refused, "not_supported"
            if run.over_limit is not None:
                reason, failure_code = f"killed by the runner: {run.over_limit}", "limit_exceeded"
            elif code == 0 and self.files is not None:  # on Ray: the outputs it sent back
                try:
                    note = self.files.collect(repo, job, run.box.work_dir)
                except NpuCenterError as exc:
                    reason, failure_code = f"its output was not kept: {exc}", "output_invalid"
                else:
                    tail = f"{tail}\n[npucenter] {note}".strip() if note else tail
            repo.finish_job_run(
                job,
                exit_code=code,
                log_tail=tail,
                failure_code=failure_code,
                failure_reason=reason,
                energy_j=energy_j,
            )
            log.info("job %d exited with code %s", job.id, code)
            return True
        return False

    def _requeue(self, job_ids: Sequence[int], reason: str) -> None:
        for job_id in job_ids:
            with self._guard(job_id, "requeue"), self._tx() as repo:
                job = repo.get_job(job_id)
                if job.state == "running":
                    repo.preempt_job(job, reason=reason)

    def _stop_orphans(self) -> frozenset[int]:
        """Stop what a dead runner left alive; the ids of jobs whose process would not stop."""
        stuck: set[int] = set()
        for run_dir, mark in find_marks(self.work_dir):
            if mark.job_id in self._runs:
                continue
            if has_family(mark):
                log.warning(
                    "job %d: its process %d (started by center pid %d) outlived that center; "
                    "stopping it before the job is queued again",
                    mark.job_id,
                    mark.pid,
                    mark.center_pid,
                )
                if not stop_family(mark, grace_s=self.grace_s):
                    log.error("job %d: process %d did not stop", mark.job_id, mark.pid)
                    stuck.add(mark.job_id)
                    continue
            clear_mark(run_dir)
        return frozenset(stuck)

    def _requeue_orphaned(self, stuck: frozenset[int] = frozenset()) -> list[int]:
        with self._tx() as repo:  # keys of runs a stopped runner left: none runs any more
            held = frozenset(r.key_id for r in self._runs.values() if r.key_id is not None)
            revoked = repo.revoke_job_keys(keep=held)
        if revoked:
            log.info("revoked %d job key(s) a stopped center left", len(revoked))
        with self._tx() as repo:
            ids = [
                j.id
                for j in repo.list_jobs(state="running")
                if j.runner == RUNNER_NAME and j.id not in self._runs
            ]
        for job_id in sorted(stuck & set(ids)):  # still alive: never start it a second time
            reason = "its process outlived a stopped center and could not be stopped"
            with self._guard(job_id, "fail"), self._tx() as repo:
                repo.finish_job_run(
                    repo.get_job(job_id),
                    exit_code=None,
                    failure_code="cannot_stop",
                    failure_reason=reason,
                )
        ids = [i for i in ids if i not in stuck]
        self._requeue(ids, "the center restarted while it ran; requeued")
        if ids:
            log.warning("requeued jobs %s left running by a stopped center", ids)
        return ids

    @contextlib.contextmanager
    def _guard(self, job_id: int, what: str) -> Iterator[None]:
        # A write that lost a race (a cancel, a cycle) is logged; the next tick sees the truth.
        try:
            yield
        except NpuCenterError as exc:
            log.warning("job %d: %s skipped: %s", job_id, what, exc)


def _forget(run: _Run) -> None:
    # Its first process has exited: what it left in its session (an unisolated job's background
    # children; a sandboxed job's die with its pid namespace) is killed, then nothing is left
    # for a restarted runner to stop.
    if not isinstance(run.proc, subprocess.Popen):
        return
    run_dir = run.log_path.parent
    mark = read_mark(run_dir)
    if mark is not None and mark.pid == run.proc.pid and has_family(mark):
        log.info("job %d: killing what it left running", run.view.job_id)
        stop_family(mark, grace_s=0.0, wait_s=2.0)
    clear_mark(run_dir)


def _must_exist(program: str, path: str, box: JobBox) -> None:
    # In the sandbox a missing program is `env`'s exit 127; say it as an unstartable command.
    if "/" in program and not program.startswith("/"):
        found = (box.work_dir / program).exists()
    else:
        found = shutil.which(program, path=path) is not None
    if not found:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)


def _exists(repo: Repository, job_id: int) -> bool:
    try:
        repo.get_job(job_id)
    except NpuCenterError:
        return False
    return True


def _view(repo: Repository, job: Job) -> _JobView:
    server, cards = repo.job_cards(job)
    return _JobView(
        job_id=job.id,
        state=job.state,
        kind=job.kind,
        device_type=job.device_type,
        image=job.image,
        command=tuple(job.command or ()),
        admitted_at_s=job.admitted_at_s,
        runner=job.runner,
        server=server,
        cards=tuple(cards),
    )


def _index(source_id: str) -> int | None:
    match = re.search(r"(\d+)$", source_id)
    return int(match.group(1)) if match else None


def _read_tail(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - MAX_LOG_TAIL_CHARS))
            data = f.read()
    except OSError:
        return ""
    lines = data.decode(errors="replace").splitlines()
    if size > MAX_LOG_TAIL_CHARS and lines:
        lines = lines[1:]  # the first line read is cut
    return "\n".join(lines[-_NUM_TAIL_LINES:])


def _read_result(path: Path) -> tuple[dict[str, Any] | None, str]:
    # The job owns the directory: a link there (to the store, to /etc/shadow) is not followed,
    # only a regular file is read, and no more than a result may hold.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None, ""
    except OSError as exc:
        return None, f"result file ignored: {exc.strerror or exc}"
    try:
        with open(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return None, "result file ignored: not a regular file"
            data = f.read(MAX_RESULT_BYTES * 4 + 1)
        if len(data) > MAX_RESULT_BYTES * 4:
            return None, "result file ignored: too large"
        # NaN/Infinity (not JSON, though Python writes them) become null
        document = json.loads(data, parse_constant=lambda _: None)
    except (OSError, ValueError) as exc:
        return None, f"result file ignored: not valid JSON ({exc})"
    if not isinstance(document, dict):
        return None, "result file ignored: it must hold a JSON object"
    return document, ""


@atexit.register
def _kill_children_at_exit() -> None:
    for runner in list(_LIVE_RUNNERS):
        runner.kill_all_now()
