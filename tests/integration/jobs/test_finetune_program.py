"""The finetune program itself: a run stopped by SIGTERM (preemption) checkpoints and a new run
in the same work dir resumes there, ending with the loss curve of a run that never stopped."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("peft")
ROOT = Path(__file__).resolve().parents[3]
STEPS = 6


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from npucenter.engines.tiny import ensure_tiny_model

    path = tmp_path_factory.mktemp("models") / "tiny-llama"
    ensure_tiny_model(path)
    return path


def _work_dir(root: Path, model: Path) -> Path:
    shutil.copytree(model, root / "inputs" / "model")
    shutil.copy(ROOT / "examples" / "jobs" / "lora-tiny.jsonl", root / "inputs" / "data.jsonl")
    spec = {
        "program": "finetune", "base_model": "tiny-llama", "adapter": "t",
        "model_dir": "inputs/model", "dataset": "inputs/data.jsonl",
        "rank": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"],
        "steps": STEPS, "learning_rate": 0.003, "batch_size": 4, "max_seq_len": 32,
        "seed": 7, "checkpoint_every": 100,
    }  # fmt: skip
    (root / "spec.json").write_text(json.dumps(spec))
    return root


def _run(work: Path, *, stop_after_step: int | None = None) -> tuple[int, str]:
    env = {**os.environ, "NPUCENTER_RESULT_PATH": str(work / "result.json")}
    argv = [sys.executable, "-m", "npucenter.jobs.finetune", "--spec", "spec.json"]
    proc = subprocess.Popen(
        argv, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    out: list[str] = []
    deadline = time.monotonic() + 240
    for line in proc.stdout:
        out.append(line)
        if stop_after_step is not None and line.startswith(f"step {stop_after_step}/"):
            proc.send_signal(signal.SIGTERM)
            stop_after_step = None
        assert time.monotonic() < deadline, "".join(out)
    return proc.wait(timeout=60), "".join(out)


def test_a_preempted_fine_tune_resumes_from_its_checkpoint(tmp_path: Path, tiny_model: Path):
    straight = _work_dir(tmp_path / "straight", tiny_model)
    code, log = _run(straight)
    assert code == 0, log
    whole = json.loads((straight / "result.json").read_text())
    assert [s for s, _ in whole["loss_curve"]] == list(range(1, STEPS + 1))
    assert (
        whole["resumed_from_step"] == 0 and (straight / "adapter" / "adapter_config.json").is_file()
    )

    work = _work_dir(tmp_path / "preempted", tiny_model)
    code, log = _run(work, stop_after_step=2)
    assert code == 143, log
    assert not (work / "result.json").exists() and not (work / "adapter").exists()
    (checkpoint,) = (work / "checkpoints").glob("step-*")
    stopped_at = int(checkpoint.name.split("-")[1])
    assert 2 <= stopped_at < STEPS
    code, log = _run(work)
    assert code == 0 and f"resumed from step-{stopped_at}" in log, log
    resumed = json.loads((work / "result.json").read_text())
    assert resumed["resumed_from_step"] == stopped_at
    assert [s for s, _ in resumed["loss_curve"]] == list(range(1, STEPS + 1))
    losses = [loss for _, loss in resumed["loss_curve"]]
    assert losses == pytest.approx([loss for _, loss in whole["loss_curve"]], rel=1e-4)
