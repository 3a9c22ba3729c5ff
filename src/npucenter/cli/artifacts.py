"""`npucenter dataset|adapter ...` and `npucenter job submit FILE`: a tenant's artifacts over the API.

A job file (YAML) names its kind, its cards and, for the center's own programs, their spec under
the kind's key (``finetune:`` or ``preprocess:``); a ``dataset`` there that is a local file
(relative to the job file) is uploaded first as a data set named after the file (the same bytes
are not stored twice), and the job then names that data set.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import typer
import yaml

from npucenter.cli._common import handle_errors
from npucenter.cli.calls import JOB_COLUMNS, JSON_OPT, _call, _delete, _show, _table
from npucenter.errors import InvalidConfigError
from npucenter.files.fleet import read_fleet_file

__all__ = ["adapter_app", "dataset_app", "submit_job_file"]

dataset_app = typer.Typer(help="JSONL data sets for fine-tunes (yours only).", no_args_is_help=True)
adapter_app = typer.Typer(help="LoRA adapters your fine-tunes made.", no_args_is_help=True)

DATASET_COLUMNS = ["id", "tenant", "name", "format", "num_records", "num_bytes", "sha256"]
ADAPTER_COLUMNS = ["id", "tenant", "name", "base_model", "rank", "target_modules", "source_job_id"]
#: Device type a job file's kind asks for when it names none (fine-tunes go to the GPU pool).
DEFAULT_DEVICE = {
    "finetune": "h100",
    "preprocess": "h100",
    "benchmark": "h100",
    "simulate": "h100",  # the twin holds one card while it runs (docs/console.md)
    "plan": "h100",
}


def upload(path: Path, name: str | None = None, tenant: str | None = None) -> dict[str, Any]:
    """Upload a local JSONL file as a data set (named after the file unless ``name``)."""
    data = path.read_bytes()
    body = {
        "name": name or path.stem,
        "content": data.decode("utf-8", errors="replace"),
        "sha256": hashlib.sha256(data).hexdigest(),
        "tenant": tenant,
    }
    doc: dict[str, Any] = _call("POST", "/api/datasets", body)
    return doc


@dataset_app.command("upload")
@handle_errors
def dataset_upload(
    path: Path = typer.Argument(..., exists=True, dir_okay=False, help="A JSONL file."),
    name: str | None = typer.Option(None, "--name", help="Its name (default: the file's stem)."),
    tenant: str | None = typer.Option(None, "--tenant", help="Admins upload for a tenant."),
    json_out: bool = JSON_OPT,
) -> None:
    """Upload a JSONL data set (checked line by line; its sha256 checked by the center)."""
    _show(upload(path, name, tenant), json_out, DATASET_COLUMNS)


@dataset_app.command("list")
@handle_errors
def dataset_list(json_out: bool = JSON_OPT) -> None:
    """List data sets."""
    _table(json_out, DATASET_COLUMNS, "GET", "/api/datasets", title="data sets")


@dataset_app.command("show")
@handle_errors
def dataset_show(ref: str = typer.Argument(...), json_out: bool = JSON_OPT) -> None:
    """Show a data set (by id or name)."""
    _table(json_out, DATASET_COLUMNS, "GET", f"/api/datasets/{ref}")


@dataset_app.command("delete")
@handle_errors
def dataset_delete(ref: str = typer.Argument(...), json_out: bool = JSON_OPT) -> None:
    """Delete a data set and its bytes."""
    _delete(json_out, f"/api/datasets/{ref}", "deleted", ref)


@dataset_app.command("usage")
@handle_errors
def dataset_usage(json_out: bool = JSON_OPT) -> None:
    """Bytes stored per tenant (data sets, adapters, outputs)."""
    _table(json_out, ["tenant", "total_bytes", "bytes_by_kind"], "GET", "/api/storage")


@adapter_app.command("list")
@handle_errors
def adapter_list(json_out: bool = JSON_OPT) -> None:
    """List adapters (request one as model="<name>" or "<base>:<name>")."""
    _table(json_out, ADAPTER_COLUMNS, "GET", "/api/adapters", title="adapters")


@adapter_app.command("show")
@handle_errors
def adapter_show(ref: str = typer.Argument(...), json_out: bool = JSON_OPT) -> None:
    """Show an adapter (by id or name)."""
    _table(
        json_out,
        [*ADAPTER_COLUMNS, "alpha", "served_as", "num_bytes"],
        "GET",
        f"/api/adapters/{ref}",
    )


@adapter_app.command("delete")
@handle_errors
def adapter_delete(ref: str = typer.Argument(...), json_out: bool = JSON_OPT) -> None:
    """Delete an adapter (unloaded from the engines serving it)."""
    _delete(json_out, f"/api/adapters/{ref}", "deleted", ref)


def submit_job_file(path: Path, *, tenant: str | None, json_out: bool) -> None:
    """Submit the job a YAML file describes (uploading a local data set it names)."""
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InvalidConfigError("job file", str(path), f"not YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidConfigError("job file", str(path), "must be a mapping")
    known = {"name", "kind", "device", "cards", "priority", "fallback_devices", "command", "image"}
    kind = doc.get("kind")
    unknown = sorted(set(doc) - known - {"finetune", "preprocess", "simulate", "plan", "tenant"})
    if unknown:
        raise InvalidConfigError(f"job file {path}: {unknown[0]}", doc[unknown[0]], "unknown key")
    if kind not in DEFAULT_DEVICE:
        raise InvalidConfigError("kind", kind, f"choose one of {', '.join(DEFAULT_DEVICE)}")
    spec = doc.get(kind) if kind in ("finetune", "preprocess", "simulate", "plan") else None
    if spec is not None and kind in ("simulate", "plan"):
        spec = _twin_spec(path, kind, spec)
    elif spec is not None:
        if not isinstance(spec, dict):
            raise InvalidConfigError(kind, spec, "must be a mapping")
        spec = dict(spec)
        local = path.parent / str(spec.get("dataset", ""))
        if spec.get("dataset") and local.is_file():
            spec["dataset"] = upload(local, tenant=doc.get("tenant") or tenant)["name"]
    body = {
        "name": doc.get("name") or path.stem,
        "kind": kind,
        "device_type": doc.get("device") or DEFAULT_DEVICE[kind],
        "num_cards": doc.get("cards", 1),
        "priority_class": doc.get("priority"),
        "tenant": doc.get("tenant") or tenant,
        "fallback_device_types": list(doc.get("fallback_devices") or []),
        "command": list(doc.get("command") or []),
        "image": doc.get("image"),
        "spec": spec,
    }
    _table(json_out, JOB_COLUMNS, "POST", "/api/jobs", body)


def _twin_spec(path: Path, kind: str, spec: Any) -> dict[str, Any]:
    """A simulate/plan job's spec with its ``fleet:``/``plan:`` file (relative to the job file)
    read into it: the job carries its inputs inline."""
    if not isinstance(spec, dict):
        raise InvalidConfigError(kind, spec, "must be a mapping")
    spec = dict(spec)
    key = "fleet" if kind == "simulate" else "plan"
    if isinstance(spec.get(key), str):
        source = path.parent / spec[key]
        spec.setdefault(f"{key}_label", spec[key])
        spec[key] = read_fleet_file(source)  # a YAML mapping; missing or bad files say so
    return spec
