"""InProcessExecutor: virtual replicas served from the test's own event loop."""

from __future__ import annotations

import httpx
import pytest

from npucenter.engines import ReplicaSpec
from npucenter.errors import NotSupportedError
from npucenter.executors import InProcessExecutor, ReplicaState


async def test_many_replicas_start_serve_restart_and_stop() -> None:
    ex = InProcessExecutor()
    try:
        specs = [
            ReplicaSpec(engine="virtual", model="llama-3.1-8b", device=d, time_scale=0.0)
            for d in ("rngd", "rngd", "nvidia_h100_sxm")
        ]
        replicas = [await ex.start(s) for s in specs]
        assert len({r.launch.port for r in replicas}) == 3
        assert all(r.state is ReplicaState.READY for r in replicas)
        async with httpx.AsyncClient(timeout=10) as client:
            for r in replicas:
                resp = await client.post(
                    r.openai_base_url + "/completions", json={"prompt": "a b", "max_tokens": 3}
                )
                assert resp.json()["usage"]["completion_tokens"] == 3
        again = await ex.restart(replicas[0].replica_id)
        assert again.restarts == 1 and await ex.check(again.replica_id)
        await ex.stop(replicas[1].replica_id)
        assert not await ex.check(replicas[1].replica_id)
        assert len(ex.replicas()) == 2
    finally:
        await ex.shutdown()
    assert ex.replicas() == []


async def test_only_the_virtual_engine_runs_in_process() -> None:
    with pytest.raises(NotSupportedError):
        await InProcessExecutor().start(ReplicaSpec(engine="vllm", model="m", device="h100"))
