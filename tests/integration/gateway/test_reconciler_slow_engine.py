"""A real process that never becomes ready: the start times out into a visible failure with the
engine's own last log lines, and the reconciler's tick does not wait for it."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from npucenter.engines import engine_choice
from npucenter.executors.local import LocalProcessExecutor
from npucenter.gateway import Gateway, StaticKeyResolver
from npucenter.gateway.reconciler import DeploymentReconciler, WantedReplica

SLOW_ENGINE = """#!{python}
import sys, time
print("loading weights for", sys.argv[sys.argv.index("--model") + 1], flush=True)
time.sleep(60)
"""


def test_a_start_that_times_out_is_a_failure_with_the_engines_log(tmp_path: Path) -> None:
    script = tmp_path / "slow-engine"
    script.write_text(SLOW_ENGINE.format(python=sys.executable))
    script.chmod(0o755)
    models = tmp_path / "models"  # an explicit path outside the models dir is never built
    choice = engine_choice(
        {"name": "vllm", "python": str(script), "model_path": str(tmp_path / "elsewhere")}
        | {"ready_timeout_s": 4.0}
    )
    wanted = WantedReplica(
        replica_id="cpu-0-r0",
        deployment_id=1,
        deployment="slow",
        tenant="lab",
        model="tiny-llama",
        device="cpu",
        precision="bf16",
        tp=1,
        server="cpu-0",
        card_indices=(0,),
        engine=choice,
    )
    executor = LocalProcessExecutor(log_dir=tmp_path / "logs", poll_interval_s=0.1)
    gateway = Gateway(keys=StaticKeyResolver({}))
    reconciler = DeploymentReconciler(
        read=lambda: [wanted],
        executor=executor,
        gateway=gateway,
        start_wait_s=0.2,
        models_dir=models,
    )

    async def run() -> None:
        t0 = time.monotonic()
        report = await reconciler.reconcile()
        # the tick did not wait for the engine: it returned (after its 0.2 s start wait) well
        # before the 4 s ready timeout, with the start's outcome unknown
        assert time.monotonic() - t0 < 3.0
        assert not report.started and not report.failed
        assert reconciler.engine_states()[0]["state"] == "starting"
        assert "cpu-0-r0" not in reconciler.failures
        deadline = time.monotonic() + 15
        while "cpu-0-r0" not in reconciler.failures:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        (state,) = reconciler.engine_states()
        assert state["state"] == "failed" and "not ready within 4 s" in state["error"]
        assert f"loading weights for {tmp_path / 'elsewhere'}" in state["log_tail"]
        assert not (tmp_path / "elsewhere").exists() and not models.exists()
        assert gateway.pool.replicas() == []
        await reconciler.shutdown()
        await executor.shutdown()

    asyncio.run(run())
