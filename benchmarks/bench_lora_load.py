"""LoRA adapter load time on a real engine: vLLM's CPU build serving the tiny model here.

Needs the engine extra (vLLM, transformers, peft). Starts one vLLM replica of ``tiny-llama``
the way the center does (``examples/fleets/cpu-vllm.yaml``'s engine options: ``enable_lora``,
``max_lora_rank 8``), saves a LoRA adapter of it with peft (r=8 on q_proj/v_proj, the shape
``examples/jobs/lora-tiny.yaml`` trains; its weights do not matter for the load), then times
``POST /v1/load_lora_adapter`` (the gateway's on-demand load) ``--rounds`` times, each followed
by an unload, and one greedy completion with and without the adapter (its first use after a
load). The median load time is what the twin charges a replica of the ``cpu`` device that
has to load an adapter (``npucenter.perf.lora.ADAPTER_LOAD_S``, labelled "measured on this
machine"); results go to ``bench/results/lora_load.json``. Figures are of this machine (2
shared vCPUs): run it on an idle machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

from npucenter.engines import engine_choice
from npucenter.engines.lora import load_adapter, unload_adapter
from npucenter.engines.tiny import ensure_tiny_model
from npucenter.executors.local import LocalProcessExecutor
from npucenter.gateway.reconciler import WantedReplica

RANK, TARGETS = 8, ("q_proj", "v_proj")


def _adapter(model_dir: Path, out: Path) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    config = LoraConfig(
        r=RANK, lora_alpha=16, target_modules=list(TARGETS), init_lora_weights=False
    )
    get_peft_model(base, config).save_pretrained(out)
    return out


async def _run(tmp: Path, rounds: int) -> dict[str, Any]:
    model_dir = tmp / "models" / "tiny-llama"
    ensure_tiny_model(model_dir)
    adapter = _adapter(model_dir, tmp / "adapter")
    options = {"name": "vllm", "max_model_len": 1024, "kv_cache_space_gb": 1}
    options |= {"ready_timeout_s": 400, "enable_lora": True, "max_lora_rank": RANK}
    wanted = WantedReplica(
        replica_id="cpu-0-r0",
        deployment_id=1,
        deployment="bench",
        tenant="bench",
        model="tiny-llama",
        device="cpu",
        precision="bf16",
        tp=1,
        server="cpu-0",
        card_indices=(0,),
        max_num_seqs=16,
        engine=engine_choice(options),
    )
    executor = LocalProcessExecutor(log_dir=tmp / "logs", poll_interval_s=0.5)
    t0 = time.perf_counter()
    replica = await executor.start(wanted.spec(models_dir=tmp / "models"))
    ready_s = time.perf_counter() - t0
    url = replica.base_url.rstrip("/")
    loads, unloads, first_use, base_use = [], [], [], []
    try:
        async with httpx.AsyncClient(timeout=120) as client:
            body = {"prompt": "The lab in Gwangju", "max_tokens": 8, "temperature": 0}
            for _ in range(3):  # warm the base path
                await client.post(f"{url}/v1/completions", json=body | {"model": "tiny-llama"})
            for i in range(rounds):
                name = f"bench-{i}"
                t = time.perf_counter()
                await load_adapter(client, url, name, adapter)
                loads.append(time.perf_counter() - t)
                t = time.perf_counter()
                r = await client.post(f"{url}/v1/completions", json=body | {"model": name})
                first_use.append(time.perf_counter() - t)
                assert r.status_code == 200, r.text
                t = time.perf_counter()
                r = await client.post(f"{url}/v1/completions", json=body | {"model": "tiny-llama"})
                base_use.append(time.perf_counter() - t)
                t = time.perf_counter()
                await unload_adapter(client, url, name)
                unloads.append(time.perf_counter() - t)
    finally:
        await executor.shutdown()

    def stats(xs: list[float]) -> dict[str, float]:
        return {
            "median_s": statistics.median(xs),
            "min_s": min(xs),
            "max_s": max(xs),
            "mean_s": statistics.fmean(xs),
        }

    return {
        "engine": "vllm (CPU build)",
        "model": "tiny-llama",
        "adapter": {"rank": RANK, "target_modules": list(TARGETS)},
        "rounds": rounds,
        "engine_ready_s": ready_s,
        "load": stats(loads),
        "unload": stats(unloads),
        "first_completion_with_adapter": stats(first_use),
        "completion_base": stats(base_use),
        "note": "measured on this machine (2 shared vCPUs); each load follows an unload",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="npucenter-lora-load-") as tmp:
        result = asyncio.run(_run(Path(tmp), args.rounds))
    path = write_result("lora_load", result)
    print(json.dumps({k: result[k] for k in ("engine_ready_s", "load", "unload")}, indent=1))
    print(f"-> {path}")


if __name__ == "__main__":
    main()
