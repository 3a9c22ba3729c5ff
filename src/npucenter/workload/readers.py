"""Trace readers: the shipped Azure LLM inference traces and generic CSV/JSONL request logs.

Parsers take text (the CLI reads files); the only file access here is the package's own data.
Azure traces: Patel et al., "Splitwise", ISCA 2024; AzurePublicDataset, CC BY 4.0 (see
``workload/data/README.md``).
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

import numpy as np

from npucenter.errors import InvalidConfigError, NotFoundError
from npucenter.workload.trace import Trace

__all__ = [
    "AZURE_TRACES",
    "AZURE_TRACE_CITATION",
    "parse_azure_csv",
    "parse_request_log",
    "read_azure_trace",
]

#: Short name -> packaged file of the Azure LLM inference trace (2023).
AZURE_TRACES = {
    "conv": "AzureLLMInferenceTrace_conv.csv",
    "code": "AzureLLMInferenceTrace_code.csv",
}
AZURE_TRACE_CITATION = (
    "Azure LLM inference trace 2023 (AzurePublicDataset, CC BY 4.0); Patel et al., "
    "'Splitwise: Efficient generative LLM inference using phase splitting', ISCA 2024"
)

_ARRIVAL_KEYS = ("arrival_s", "timestamp_s", "time_s", "arrival_time", "timestamp", "TIMESTAMP")
_PROMPT_KEYS = ("prompt_tokens", "input_tokens", "context_tokens", "ContextTokens", "input_len")
_OUTPUT_KEYS = ("output_tokens", "generated_tokens", "GeneratedTokens", "max_tokens", "output_len")


def read_azure_trace(name: str) -> Trace:
    """The packaged Azure trace ``conv`` (19,366 requests) or ``code`` (8,819), from t = 0."""
    key = name.lower().removeprefix("azure-").removeprefix("azure_")
    if key not in AZURE_TRACES:
        raise NotFoundError("trace", name, valid=list(AZURE_TRACES))
    return _read_azure_cached(key)


@cache
def _read_azure_cached(key: str) -> Trace:
    text = resources.files("npucenter.workload").joinpath("data", AZURE_TRACES[key]).read_text()
    trace = parse_azure_csv(text, name=f"azure-{key}")
    return trace


def parse_azure_csv(text: str, *, name: str = "azure") -> Trace:
    """Parse the Azure trace format: ``TIMESTAMP,ContextTokens,GeneratedTokens``.

    Timestamps are ``YYYY-MM-DD HH:MM:SS.fffffff``; arrivals are seconds after the first one.
    """
    lines = text.splitlines()
    if not lines or [c.strip() for c in lines[0].split(",")] != [
        "TIMESTAMP",
        "ContextTokens",
        "GeneratedTokens",
    ]:
        raise InvalidConfigError(
            "trace header", lines[0] if lines else "", "expected TIMESTAMP,ContextTokens,..."
        )
    rows = [ln.split(",") for ln in lines[1:] if ln.strip()]
    try:
        stamps = [_azure_seconds(r[0]) for r in rows]
        prompt = np.array([int(r[1]) for r in rows], dtype=np.int64)
        output = np.array([int(r[2]) for r in rows], dtype=np.int64)
    except (IndexError, ValueError) as exc:
        raise InvalidConfigError("trace row", str(exc), "malformed Azure trace row") from exc
    arrival = np.array(stamps, dtype=np.float64)
    order = np.argsort(arrival, kind="stable")
    arrival = arrival[order] - (arrival.min() if len(arrival) else 0.0)
    return Trace(
        name=name,
        arrival_s=arrival,
        prompt_tokens=np.maximum(prompt[order], 1),
        output_tokens=np.maximum(output[order], 1),
        source=AZURE_TRACE_CITATION,
    )


def _azure_seconds(stamp: str) -> float:
    day, _, clock = stamp.strip().partition(" ")
    hh, mm, ss = clock.split(":")
    return _day_ordinal(day) * 86400.0 + int(hh) * 3600.0 + int(mm) * 60.0 + float(ss)


@cache
def _day_ordinal(day: str) -> int:
    return datetime.strptime(day, "%Y-%m-%d").toordinal()


def parse_request_log(text: str, *, fmt: str = "csv", name: str = "log") -> Trace:
    """Parse a generic request log (``fmt`` ``"csv"`` with a header, or ``"jsonl"``).

    Recognised columns: arrival (``arrival_s``/``timestamp_s``/``timestamp`` — seconds, or an ISO
    date-time), prompt (``prompt_tokens``/``input_tokens``/``context_tokens``), output
    (``output_tokens``/``generated_tokens``/``max_tokens``), optional ``service`` and ``tenant``.
    Rows need not be sorted; arrivals are rebased to start at 0.
    """
    if fmt not in ("csv", "jsonl"):
        raise InvalidConfigError("format", fmt, "must be 'csv' or 'jsonl'")
    records: list[dict[str, Any]]
    if fmt == "csv":
        records = list(csv.DictReader(io.StringIO(text)))
    else:
        records = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidConfigError("jsonl line", lineno, f"not JSON: {exc.msg}") from exc
            if not isinstance(rec, dict):
                raise InvalidConfigError("jsonl line", lineno, "must be a JSON object")
            records.append(rec)
    if not records:
        raise InvalidConfigError("request log", name, "has no requests")
    first = records[0]
    a_key = _pick(first, _ARRIVAL_KEYS, "arrival")
    p_key = _pick(first, _PROMPT_KEYS, "prompt tokens")
    o_key = _pick(first, _OUTPUT_KEYS, "output tokens")
    arrivals, prompts, outputs, services, tenants = [], [], [], [], []
    for i, rec in enumerate(records, 1):
        try:
            arrivals.append(_seconds(rec[a_key]))
            prompts.append(int(rec[p_key]))
            outputs.append(int(rec[o_key]))
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidConfigError("request log row", i, f"bad value: {exc}") from exc
        services.append(str(rec.get("service") or "default"))
        tenants.append(str(rec.get("tenant") or ""))
    arrival = np.array(arrivals, dtype=np.float64)
    order = np.argsort(arrival, kind="stable")
    service_names = tuple(dict.fromkeys(services[i] for i in order))
    tenant_names = tuple(dict.fromkeys(tenants[i] for i in order))
    return Trace(
        name=name,
        arrival_s=arrival[order] - arrival.min(),
        prompt_tokens=np.array(prompts, dtype=np.int64)[order],
        output_tokens=np.array(outputs, dtype=np.int64)[order],
        service_index=np.array([service_names.index(services[i]) for i in order]),
        service_names=service_names,
        tenant_index=np.array([tenant_names.index(tenants[i]) for i in order]),
        tenant_names=tenant_names,
        source=name,
    )


def _pick(record: dict[str, Any], keys: tuple[str, ...], what: str) -> str:
    for key in keys:
        if key in record:
            return key
    raise InvalidConfigError(
        "request log columns", sorted(record), f"no {what} column; use one of {list(keys)}"
    )


def _seconds(value: Any) -> float:
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return _azure_seconds(text)
