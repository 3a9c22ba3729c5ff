"""The data-set format (JSONL) and its checks; tokenising and packing for training.

A data set is UTF-8 JSON Lines, one object per line, each in one of three shapes:

- ``{"text": "..."}``: trained on as it is;
- ``{"prompt": "...", "completion": "..."}``: trained on as prompt + completion;
- ``{"messages": [{"role": "user", "content": "..."}, ...]}``: rendered with the base
  model's chat template.

A preprocessed (packed) data set holds ``{"input_ids": [int, ...]}`` lines instead. Blank lines
are skipped. :func:`check_jsonl` finds the first bad line and says what is wrong with it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from npucenter.errors import InvalidRequestError

__all__ = [
    "DATASET_FORMATS",
    "MAX_DATASET_BYTES",
    "DatasetInfo",
    "check_jsonl",
    "pack",
    "read_records",
    "record_text",
]

#: The largest data set the center takes in one upload (bytes).
MAX_DATASET_BYTES = 64 * 1024 * 1024
DATASET_FORMATS = ("jsonl", "packed-jsonl")
_ROLES = frozenset({"system", "user", "assistant", "tool"})


@dataclass(frozen=True, slots=True, kw_only=True)
class DatasetInfo:
    """What the check found: its format, number of records, size and checksum."""

    format: str  # jsonl | packed-jsonl
    num_records: int
    num_bytes: int
    sha256: str


def _line_error(line_no: int, why: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"data set line {line_no}: {why}",
        hint='each line must be one JSON object: {"text": ...}, {"prompt": ..., "completion": ...}'
        ', {"messages": [{"role": ..., "content": ...}]} or {"input_ids": [...]}',
        details={"line": line_no},
    )


def _shape(obj: Any, line_no: int) -> str:
    if not isinstance(obj, dict):
        raise _line_error(line_no, f"a JSON {type(obj).__name__}, not an object")
    if "input_ids" in obj:
        ids = obj["input_ids"]
        if (
            not isinstance(ids, list)
            or not ids
            or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids)
        ):
            raise _line_error(line_no, '"input_ids" must be a non-empty list of token ids')
        return "packed-jsonl"
    if "text" in obj:
        if not isinstance(obj["text"], str) or not obj["text"]:
            raise _line_error(line_no, '"text" must be a non-empty string')
        return "jsonl"
    if "prompt" in obj or "completion" in obj:
        for key in ("prompt", "completion"):
            if not isinstance(obj.get(key), str):
                raise _line_error(line_no, f'"{key}" must be a string')
        if not obj["prompt"] + obj["completion"]:
            raise _line_error(line_no, "prompt and completion are both empty")
        return "jsonl"
    if "messages" in obj:
        messages = obj["messages"]
        if not isinstance(messages, list) or not messages:
            raise _line_error(line_no, '"messages" must be a non-empty list')
        for i, m in enumerate(messages):
            if (
                not isinstance(m, dict)
                or m.get("role") not in _ROLES
                or not isinstance(m.get("content"), str)
            ):
                raise _line_error(
                    line_no,
                    f"message {i} needs a role ({', '.join(sorted(_ROLES))}) and a string content",
                )
        return "jsonl"
    keys = ", ".join(sorted(map(str, obj))) or "none"
    raise _line_error(line_no, f"no text, prompt/completion, messages or input_ids (keys: {keys})")


def check_jsonl(data: bytes, *, max_bytes: int = MAX_DATASET_BYTES) -> DatasetInfo:
    """Check a JSONL data set; raises :class:`InvalidRequestError` naming the first bad line."""
    if len(data) > max_bytes:
        raise InvalidRequestError(
            f"the data set is {len(data)} bytes; the limit is {max_bytes}",
            hint="split it, or preprocess it into fewer tokens",
            details={"num_bytes": len(data), "max_bytes": max_bytes},
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_no = data[: exc.start].count(b"\n") + 1
        raise _line_error(line_no, "not UTF-8") from None
    formats: set[str] = set()
    num_records = 0
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _line_error(line_no, f"not JSON ({exc.msg} at column {exc.colno})") from None
        formats.add(_shape(obj, line_no))
        if len(formats) > 1:
            raise _line_error(line_no, "mixes packed (input_ids) and text records")
        num_records += 1
    if num_records == 0:
        raise InvalidRequestError("the data set holds no record", hint="one JSON object a line")
    return DatasetInfo(
        format=formats.pop(),
        num_records=num_records,
        num_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def read_records(text: str) -> list[dict[str, Any]]:
    """The records of a checked data set (blank lines skipped)."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def record_text(record: dict[str, Any], chat: Callable[[list[dict[str, str]]], str] | None) -> str:
    """The text one record trains on (``chat`` renders messages with the model's template)."""
    if "text" in record:
        return str(record["text"])
    if "messages" in record:
        if chat is None:
            return "\n".join(f"{m['role']}: {m['content']}" for m in record["messages"])
        return chat(record["messages"])
    return str(record.get("prompt", "")) + str(record.get("completion", ""))


def pack(
    sequences: Iterable[Sequence[int]], *, max_seq_len: int, pad_id: int = 0
) -> tuple[list[list[int]], list[list[int]]]:
    """Pack token sequences into rows of ``max_seq_len`` (a sequence longer is cut into pieces).

    Sequences are laid end to end while a row has room; a row is padded with ``pad_id``.
    Returns ``(rows, masks)``: ``masks`` is 1 on real tokens and 0 on padding.
    """
    if max_seq_len < 2:
        raise InvalidRequestError(f"max_seq_len {max_seq_len} is too small", hint="use >= 2")
    rows: list[list[int]] = []
    current: list[int] = []
    for seq in sequences:
        ids = list(seq)
        for start in range(0, len(ids), max_seq_len):
            piece = ids[start : start + max_seq_len]
            if current and len(current) + len(piece) > max_seq_len:
                rows.append(current)
                current = []
            current.extend(piece)
    if current:
        rows.append(current)
    masks = [[1] * len(r) + [0] * (max_seq_len - len(r)) for r in rows]
    rows = [r + [pad_id] * (max_seq_len - len(r)) for r in rows]
    return rows, masks
