"""``python -m npucenter.jobs.finetune --spec spec.json``: LoRA on a base model (peft, CPU/GPU torch).

The runner writes ``spec.json`` (:class:`npucenter.jobs.spec.FinetuneSpec` plus ``model_dir``
and ``dataset`` paths in the work dir) and copies the inputs beside it. The program

- tokenises the data set with the base model's tokenizer and packs it (``max_seq_len`` rows), or
  takes a packed (``input_ids``) data set as it is;
- trains a LoRA adapter (rank, alpha, dropout, target modules) with AdamW for ``steps`` steps;
  each step's batch is drawn from ``seed`` and the step number, so a resumed run draws the same
  batches as one that never stopped;
- prints ``step N/M loss X`` lines (the job's log), keeps a checkpoint every
  ``checkpoint_every`` steps and when told to stop (SIGTERM: preemption, cancel) under
  ``checkpoints/``, and resumes from the newest one when run again in the same work dir;
- saves the adapter to ``adapter/`` (``save_pretrained``: adapter_config.json and
  adapter_model.safetensors) and writes the loss curve to the job's result.
"""

from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from npucenter.jobs._common import load_spec, say, write_result
from npucenter.jobs.data import read_records

__all__ = ["ADAPTER_DIR", "CHECKPOINT_DIR", "main"]

ADAPTER_DIR = "adapter"
CHECKPOINT_DIR = "checkpoints"
_STOP = {"requested": False}


def _on_term(_signum: int, _frame: Any) -> None:
    _STOP["requested"] = True


def _latest_checkpoint(root: Path) -> Path | None:
    done = [p for p in root.glob("step-*") if (p / "state.json").is_file()]
    return max(done, key=lambda p: int(p.name.split("-", 1)[1]), default=None)


def _save_checkpoint(model: Any, optimizer: Any, step: int, losses: list[float]) -> Path:
    import torch

    root = Path(CHECKPOINT_DIR)
    root.mkdir(exist_ok=True)
    tmp = root / f".step-{step}.part"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    (tmp / "state.json").write_text(json.dumps({"step": step, "losses": losses}))
    final = root / f"step-{step}"
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in root.glob("step-*"):  # keep the newest only
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def main(argv: list[str] | None = None) -> int:
    spec = load_spec(argv)
    signal.signal(signal.SIGTERM, _on_term)
    started = time.monotonic()
    import torch
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from npucenter.jobs.data import pack
    from npucenter.jobs.preprocess import tokenize_records

    seed, steps = int(spec["seed"]), int(spec["steps"])
    targets = sorted(str(t) for t in spec["target_modules"])
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    model: Any = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=torch.float32)
    lora = LoraConfig(
        r=int(spec["rank"]),
        lora_alpha=float(spec["alpha"]),  # type: ignore[arg-type]  # peft takes a float too
        lora_dropout=float(spec["dropout"]),
        target_modules=targets,
        task_type="CAUSAL_LM",
    )
    # the job's cards (CUDA_VISIBLE_DEVICES set by the runner) when torch sees one, else the CPU
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = get_peft_model(model, lora).to(device)
    records = read_records(Path(spec["dataset"]).read_text(encoding="utf-8"))
    sequences = tokenize_records(tokenizer, records)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    rows, masks = pack(sequences, max_seq_len=int(spec["max_seq_len"]), pad_id=int(pad_id))
    input_ids, attention = torch.tensor(rows, device=device), torch.tensor(masks, device=device)
    labels = input_ids.masked_fill(attention == 0, -100)
    num_tokens = int(attention.sum())
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=float(spec["learning_rate"]))
    say(
        f"finetune: LoRA r={lora.r} alpha={lora.lora_alpha:g} on {targets} of "
        f"{spec['base_model']}, {len(records)} records -> {len(rows)} rows, {num_tokens} tokens, "
        f"{sum(p.numel() for p in trainable)} trainable parameters, on {device}"
    )

    losses: list[float] = []
    first_step = 0
    checkpoint = _latest_checkpoint(Path(CHECKPOINT_DIR))
    if checkpoint is not None:
        state = json.loads((checkpoint / "state.json").read_text())
        weights = load_file(str(checkpoint / "adapter_model.safetensors"), device=device)
        set_peft_model_state_dict(model, weights)
        optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", map_location=device))
        first_step, losses = int(state["step"]), [float(x) for x in state["losses"]]
        say(f"resumed from {checkpoint.name} (step {first_step}/{steps})")

    every = int(spec["checkpoint_every"])
    batch_size = min(int(spec["batch_size"]), len(rows))
    model.train()
    for step in range(first_step, steps):
        gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
        idx = torch.randperm(len(rows), generator=gen)[:batch_size].to(device)
        out = model(input_ids=input_ids[idx], attention_mask=attention[idx], labels=labels[idx])
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(round(float(out.loss), 6))
        say(f"step {step + 1}/{steps} loss {losses[-1]:.4f}")
        done = step + 1
        if _STOP["requested"]:
            path = _save_checkpoint(model, optimizer, done, losses)
            say(f"stopped at step {done}: checkpoint {path}; a new run resumes there")
            return 143
        if done % every == 0 and done < steps:
            _save_checkpoint(model, optimizer, done, losses)
            say(f"checkpoint step-{done}")

    out_dir = Path(ADAPTER_DIR)
    shutil.rmtree(out_dir, ignore_errors=True)
    model.save_pretrained(out_dir)
    config_path = out_dir / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = spec["base_model"]  # not the work dir's copy
    config_path.write_text(json.dumps(config, indent=2))
    say(f"adapter saved to {out_dir}/ (loss {losses[0]:.4f} -> {losses[-1]:.4f})")
    write_result(
        {
            "kind": "finetune",
            "base_model": spec["base_model"],
            "adapter": spec.get("adapter", ""),
            "rank": lora.r,
            "alpha": lora.lora_alpha,
            "target_modules": targets,
            "steps": steps,
            "learning_rate": float(spec["learning_rate"]),
            "seed": seed,
            "num_rows": len(rows),
            "num_tokens": num_tokens,
            "resumed_from_step": first_step,
            "loss_curve": [[i + 1, v] for i, v in enumerate(losses)],
            "initial_loss": losses[0],
            "final_loss": losses[-1],
            "wall_s": round(time.monotonic() - started, 3),
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
