"""The ``jobs`` server extension: `npucenter up` runs admitted jobs as local processes.

Wires :class:`npucenter.executors.jobs.JobRunner` to the control plane: its ticks run the
admission cycle (so jobs are admitted when capacity frees) and every committed change wakes it.
``NPUCENTER_JOB_RUNNER=0`` leaves jobs to an external executor (which reports their states
through ``POST /api/jobs/{id}/state``); ``NPUCENTER_ADMISSION_INTERVAL_S`` sets the tick;
``NPUCENTER_JOB_TELEMETRY`` names the reader that measures jobs' cards.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from npucenter.api.admission import run_admission
from npucenter.api.app import SERVER_EXTENSIONS, add_lifespan_hook
from npucenter.api.context import ControlPlane
from npucenter.artifacts import artifact_store
from npucenter.artifacts.service import JobFiles
from npucenter.executors.jobs import JobRunner
from npucenter.executors.sandbox import (
    JobIsolation,
    JobNetwork,
    Sandbox,
    SandboxPolicy,
    parse_job_limits,
)
from npucenter.fleet import default_fleet
from npucenter.settings import Settings
from npucenter.store.rates import CardRates

__all__ = ["install_job_runner", "job_runner_hook", "job_sandbox", "make_job_runner"]

log = logging.getLogger(__name__)


def make_job_runner(
    control: ControlPlane, *, interval_s: float | None = None, **kwargs: Any
) -> JobRunner:
    """A runner over ``control``'s store; jobs run in ``<data dir>/jobs/job-<id>``.

    ``settings.job_telemetry`` names a telemetry reader (``NPUCENTER_JOB_TELEMETRY``) whose
    readings of a job's cards replace their modelled power on the ledger.
    """
    settings = control.settings
    if "sandbox" not in kwargs:
        kwargs["sandbox"] = job_sandbox(settings)
    if settings.executor == "ray" and "launcher" not in kwargs:
        from npucenter.executors.ray_jobs import RayJobLauncher  # jobs on Ray, same sandbox

        kwargs["launcher"] = RayJobLauncher(address=settings.ray_address or "auto")
    if "files" not in kwargs:  # program jobs' inputs and outputs (preprocess, finetune)
        kwargs["files"] = JobFiles(
            tx=control.tx, store=artifact_store(settings), models_dir=settings.data_dir / "models"
        )
    if settings.job_telemetry and "telemetry" not in kwargs:
        from npucenter.telemetry import TELEMETRY

        kwargs["telemetry"] = TELEMETRY.get(settings.job_telemetry)()
    return JobRunner(
        tx=control.tx,
        admit=lambda: run_admission(control),
        work_dir=settings.data_dir / "jobs",
        interval_s=settings.admission_interval_s if interval_s is None else interval_s,
        **kwargs,
    )


def job_sandbox(settings: Settings) -> Sandbox:
    """The sandbox of every job (settings' ``job_*``): the data dir and the store hidden."""
    policy = SandboxPolicy(
        isolation=JobIsolation(settings.job_isolation),
        network=JobNetwork(settings.job_network),
        limits=parse_job_limits(settings.job_limits),
        env_allow=settings.job_env_allow,
        ro_paths=settings.job_ro_paths,
    )
    hidden = [settings.data_dir]
    if settings.is_sqlite:
        hidden.append(Path(settings.database_url.split(":///", 1)[-1]).parent)
    return Sandbox(policy, hidden=hidden)


def job_runner_hook(runner: JobRunner) -> Any:
    """A lifespan hook that runs ``runner`` with the app and stops it (killing its jobs) after."""

    @contextlib.asynccontextmanager
    async def run(app: FastAPI) -> AsyncIterator[None]:
        control: ControlPlane = app.state.control
        task = asyncio.create_task(_when_leading(control, runner), name="job-runner")
        control.on_change.append(runner.wake)
        try:
            yield
        finally:
            with contextlib.suppress(ValueError):
                control.on_change.remove(runner.wake)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            requeued = await runner.shutdown()
            if requeued:
                log.info("stopped jobs %s with the center; they are queued again", requeued)

    return run


async def _when_leading(control: ControlPlane, runner: JobRunner) -> None:
    if control.until_leader is not None:  # a follower runs no job (the leader does)
        await control.until_leader()
    await runner.run_forever()


def _engine_cards(app: FastAPI) -> set[tuple[str, int]]:
    """Cards the deployment reconciler's engines hold (running or stopping), if it runs."""
    reconciler = getattr(getattr(app.state, "gateway", None), "reconciler", None)
    held = getattr(reconciler, "held_cards", None)
    return set(held()) if held is not None else set()


def install_job_runner(app: FastAPI, settings: Settings) -> None:
    """Run admitted jobs as local processes while the app serves (``npucenter up``)."""
    control: ControlPlane = app.state.control
    if not control.rates.is_priced and not settings.tariff_usd_per_device_hour:
        # The embedded default: the same example price list the gateway meters tokens at.
        control.rates = CardRates.from_tariff(default_fleet().tariff_usd_per_device_hour)
    if not settings.run_jobs:
        log.info("job runner off (NPUCENTER_JOB_RUNNER=0): an external executor reports jobs")
        return
    runner = make_job_runner(control, busy_cards=lambda: _engine_cards(app))
    if runner.sandbox.enabled and runner.launcher is None:  # on Ray each node checks its own
        reason = runner.sandbox.unavailable_reason()
        if reason is not None and settings.job_isolation == "bwrap":
            runner.sandbox.check()  # required and missing: the center does not start
        if reason is not None:
            log.warning("jobs cannot be isolated here (%s): they will be refused", reason)
    else:
        log.warning("NPUCENTER_JOB_ISOLATION=none: jobs run unisolated, as the server's user")
    app.state.job_runner = runner
    add_lifespan_hook(app, job_runner_hook(runner))


if "jobs" not in SERVER_EXTENSIONS:
    SERVER_EXTENSIONS.add("jobs", install_job_runner)
