"""The versioned result file of the proving ground: build, write, read, validate.

One schema for single runs, sweeps and suites (a suite nests one result per scenario). Besides our
``summary``, every run result carries the ``vllm bench serve`` field names at top level.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import socket
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from npucenter import __version__
from npucenter.bench.metrics import vllm_fields
from npucenter.bench.record import RequestRecord
from npucenter.errors import InvalidRequestError, NotFoundError

__all__ = [
    "HARNESS_VERSION",
    "SCHEMA",
    "SCHEMA_VERSION",
    "build_result",
    "iter_runs",
    "load_result",
    "machine_info",
    "save_result",
]

SCHEMA = "npucenter.bench.result"
SCHEMA_VERSION = 1
#: The load generator's own version (bumped when measurement semantics change).
HARNESS_VERSION = f"npucenter-bench/1 ({__version__})"


def machine_info() -> dict[str, Any]:
    """Where the generator ran (its accuracy depends on it)."""
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
    }


def build_result(
    *,
    kind: str,
    scenario: Mapping[str, Any],
    endpoint: Mapping[str, Any],
    summary: Mapping[str, Any],
    records: Sequence[RequestRecord] = (),
    runs: Sequence[Mapping[str, Any]] = (),
    device: str | None = None,
    label: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A result document (``kind``: run | sweep | suite)."""
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "harness_version": HARNESS_VERSION,
        "kind": kind,
        "label": label or _default_label(endpoint, device),
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "date": dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S"),
        "backend": "openai-chat" if scenario.get("api", "chat") == "chat" else "openai",
        "model_id": endpoint.get("model"),
        "device": device,
        "scenario": dict(scenario),
        "endpoint": dict(endpoint),
        "machine": machine_info(),
        "summary": dict(summary),
    }
    if summary:
        doc.update(vllm_fields(dict(summary), dict(scenario)))
    if runs:
        doc["runs"] = [dict(r) for r in runs]
    if extra:
        doc.update(extra)
    doc["requests"] = [r.to_dict() for r in records]
    return doc


def save_result(doc: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``doc`` as JSON (parents created)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1, default=_default) + "\n", encoding="utf-8")
    return out


def load_result(path: str | Path) -> dict[str, Any]:
    """Read and check a result file.

    Raises:
        NotFoundError: no such file.
        InvalidRequestError: not JSON, or not a result of a schema version we read.
    """
    p = Path(path)
    if not p.is_file():
        raise NotFoundError("result file", str(p))
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"{p} is not JSON: {exc}", hint="pass a result file") from exc
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise InvalidRequestError(
            f"{p} is not an npucenter bench result",
            hint="pass files written by `npucenter bench run|suite --json`",
        )
    if int(doc.get("schema_version", 0)) > SCHEMA_VERSION:
        raise InvalidRequestError(
            f"{p} has schema_version {doc.get('schema_version')}; this npucenter reads "
            f"<= {SCHEMA_VERSION}",
            hint="upgrade npucenter",
        )
    return doc


def iter_runs(doc: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """The run/sweep results inside ``doc`` (a suite yields its scenarios, labelled)."""
    if doc.get("kind") == "suite":
        for sub in doc.get("results", []):
            out = dict(sub)
            out.setdefault("label", doc.get("label"))
            out.setdefault("device", doc.get("device"))
            yield out
    else:
        yield dict(doc)


def _default_label(endpoint: Mapping[str, Any], device: str | None) -> str:
    model = endpoint.get("model") or "model"
    return f"{device}/{model}" if device else f"{model}@{endpoint.get('base_url', '?')}"


def _default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
