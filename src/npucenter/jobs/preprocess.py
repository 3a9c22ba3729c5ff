"""``python -m npucenter.jobs.preprocess --spec spec.json``: tokenise and pack a data set.

Reads ``dataset`` (JSONL text records) and the base model's tokenizer from ``model_dir``, writes
``packed.jsonl`` (one ``{"input_ids": [...]}`` row of ``max_seq_len`` tokens, real tokens only, a
line) and reports the counts as the job's result. The runner stores ``packed.jsonl`` as the
tenant's data set ``output`` when the job succeeds.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from npucenter.jobs._common import load_spec, say, write_result
from npucenter.jobs.data import read_records, record_text

__all__ = ["OUTPUT_FILE", "main", "tokenize_records"]

OUTPUT_FILE = "packed.jsonl"


def tokenize_records(tokenizer: Any, records: list[dict[str, Any]]) -> list[list[int]]:
    """Token ids of each record's text, with the model's end-of-sequence token after it."""

    def chat(messages: list[dict[str, str]]) -> str:
        return str(tokenizer.apply_chat_template(messages, tokenize=False))

    eos = tokenizer.eos_token_id
    out = []
    for rec in records:
        if "input_ids" in rec:
            out.append([int(i) for i in rec["input_ids"]])
            continue
        ids = list(tokenizer(record_text(rec, chat), add_special_tokens=True)["input_ids"])
        if eos is not None and (not ids or ids[-1] != eos):
            ids.append(int(eos))
        out.append(ids)
    return out


def main(argv: list[str] | None = None) -> int:
    spec = load_spec(argv)
    from transformers import AutoTokenizer

    from npucenter.jobs.data import pack

    started = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    records = read_records(Path(spec["dataset"]).read_text(encoding="utf-8"))
    say(f"preprocess: {len(records)} records, tokenizer of {spec['base_model']}")
    sequences: list[list[int]] = []
    step = max(1, len(records) // 10)
    for i in range(0, len(records), step):
        sequences += tokenize_records(tokenizer, records[i : i + step])
        say(f"tokenised {min(i + step, len(records))}/{len(records)}")
    rows, masks = pack(sequences, max_seq_len=int(spec["max_seq_len"]), pad_id=0)
    with open(OUTPUT_FILE, "w", encoding="utf-8") as f:
        for row, mask in zip(rows, masks, strict=True):
            f.write(json.dumps({"input_ids": row[: sum(mask)]}) + "\n")
    num_tokens = sum(len(s) for s in sequences)
    say(f"packed {num_tokens} tokens into {len(rows)} rows of {spec['max_seq_len']}")
    write_result(
        {
            "kind": "preprocess",
            "num_records": len(records),
            "num_tokens": num_tokens,
            "num_rows": len(rows),
            "max_seq_len": int(spec["max_seq_len"]),
            "output": OUTPUT_FILE,
            "wall_s": round(time.monotonic() - started, 3),
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
