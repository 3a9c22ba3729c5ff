"""`npucenter tenant|key|quota|fleet|deploy|job|usage|admission ...`: the control plane over its API.

Every command talks to the server at NPUCENTER_URL with the key in NPUCENTER_API_KEY, prints a
table (or, with ``--json``, one JSON document on stdout) and exits with the error's code on
failure. :func:`install` adds every group (and ``up``, ``db``) to the root app.
"""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.markup import escape

from npucenter.api.views import slo_attainment_text
from npucenter.cli._common import console, handle_errors, print_json
from npucenter.cli.calls import JOB_COLUMNS, JSON_OPT, _api, _call, _cell, _delete, _show, _table
from npucenter.errors import InvalidConfigError, NotFoundError

__all__ = [
    "admission_app",
    "cohort_app",
    "deploy_app",
    "fleet_app",
    "install",
    "job_app",
    "key_app",
    "quota_app",
    "tenant_app",
    "usage_app",
]

tenant_app = typer.Typer(
    help="Tenants: companies, universities, research institutes.", no_args_is_help=True
)
key_app = typer.Typer(
    help="API keys (stored hashed; the secret is shown once).", no_args_is_help=True
)
quota_app = typer.Typer(
    help="Quotas per tenant and device type (cards), cohorts, priority.", no_args_is_help=True
)
cohort_app = typer.Typer(
    help="Nested cohorts: a parent and cards of their own (center -> companies -> departments).",
    no_args_is_help=True,
)
fleet_app = typer.Typer(
    help="The fleet: servers, cards, device types, health.", no_args_is_help=True
)
deploy_app = typer.Typer(
    help="Inference deployments: model, device type, TP, replicas.", no_args_is_help=True
)
job_app = typer.Typer(help="Fine-tune, preprocess and benchmark jobs.", no_args_is_help=True)
usage_app = typer.Typer(
    help="The usage ledger: device-seconds, tokens, energy, cost.", no_args_is_help=True
)
admission_app = typer.Typer(help="Run the admission cycle by hand.", no_args_is_help=True)


def install(app: typer.Typer) -> None:
    """Add the control-plane groups and `up`/`db` to the root app."""
    from npucenter.cli import db as _db
    from npucenter.cli import up as _up
    from npucenter.cli.artifacts import adapter_app, dataset_app

    for name, sub in (
        ("dataset", dataset_app),
        ("adapter", adapter_app),
        ("tenant", tenant_app),
        ("key", key_app),
        ("quota", quota_app),
        ("cohort", cohort_app),
        ("fleet", fleet_app),
        ("deploy", deploy_app),
        ("job", job_app),
        ("usage", usage_app),
        ("admission", admission_app),
        ("db", _db.app),
    ):
        app.add_typer(sub, name=name)
    app.command("up")(_up.up)


# --- tenants --------------------------------------------------------------------------------
@tenant_app.command("create")
@handle_errors
def tenant_create(
    name: str = typer.Argument(..., help="Unique tenant name."),
    kind: str = typer.Option(..., "--kind", help="company | university | research_institute."),
    json_out: bool = JSON_OPT,
) -> None:
    """Create a tenant (admin)."""
    _table(json_out, ["id", "name", "kind"], "POST", "/api/tenants", {"name": name, "kind": kind})


@tenant_app.command("list")
@handle_errors
def tenant_list(json_out: bool = JSON_OPT) -> None:
    """List tenants (a tenant key sees only its own)."""
    _table(json_out, ["id", "name", "kind"], "GET", "/api/tenants", title="tenants")


@tenant_app.command("show")
@handle_errors
def tenant_show(
    ref: str = typer.Argument(..., help="Id or name."), json_out: bool = JSON_OPT
) -> None:
    """Show one tenant."""
    _table(json_out, ["id", "name", "kind"], "GET", f"/api/tenants/{ref}")


# --- keys -----------------------------------------------------------------------------------
@key_app.command("create")
@handle_errors
def key_create(
    tenant: str | None = typer.Option(None, "--tenant", help="Tenant name (admins must give it)."),
    name: str = typer.Option("", "--name", help="A label for the key."),
    admin: bool = typer.Option(False, "--admin", help="Create an admin key (admin only)."),
    json_out: bool = JSON_OPT,
) -> None:
    """Create an API key; the secret is printed this one time only."""
    body = {"tenant": tenant, "name": name, "scope": "admin" if admin else "tenant"}
    doc = _call("POST", "/api/keys", body)
    if json_out:
        print_json(doc)
        return
    console.print(
        f"key {doc['id']} ({doc['scope']}): {doc['key']}", highlight=False, soft_wrap=True
    )
    console.print("store it now: it cannot be shown again", style="yellow")


@key_app.command("list")
@handle_errors
def key_list(json_out: bool = JSON_OPT) -> None:
    """List keys (short ids only, never secrets)."""
    _table(
        json_out,
        ["id", "short_id", "scope", "tenant_id", "name", "revoked_at_s"],
        "GET",
        "/api/keys",
        title="keys",
    )


@key_app.command("revoke")
@handle_errors
def key_revoke(key_id: int = typer.Argument(...), json_out: bool = JSON_OPT) -> None:
    """Revoke a key."""
    _table(json_out, ["id", "short_id", "scope", "revoked_at_s"], "DELETE", f"/api/keys/{key_id}")


# --- quotas ---------------------------------------------------------------------------------
QUOTA_COLUMNS = [
    "id",
    "tenant",
    "device_type",
    "nominal_cards",
    "borrowing_limit_cards",
    "lending_limit_cards",
    "cohort",
    "priority_class",
    "tokens_per_s",
    "stop_policy",
    "used_cards",
    "borrowed_cards",
]
COHORT_COLUMNS = [
    "name",
    "parent",
    "nominal_cards",
    "borrowing_limit_cards",
    "lending_limit_cards",
    "fair_share_weight",
]


@quota_app.command("set")
@handle_errors
def quota_set(
    tenant: str = typer.Option(..., "--tenant"),
    device: str = typer.Option(..., "--device", help="Device type or alias (rngd, atom, h100)."),
    nominal: int = typer.Option(..., "--nominal", help="Nominal cards."),
    borrowing_limit: int | None = typer.Option(
        None, "--borrowing-limit", help="Cards above nominal; unset: unlimited."
    ),
    lending_limit: int | None = typer.Option(
        None, "--lending-limit", help="Cards lent to the cohort; unset: all idle nominal."
    ),
    cohort: str | None = typer.Option(
        None, "--cohort", help="Cohort name (tenants lend to each other)."
    ),
    priority: str = typer.Option(
        "research", "--priority", help="production | research | education | best-effort."
    ),
    tokens_per_s: float | None = typer.Option(
        None, "--tokens-per-s", help="Token rate on shared services."
    ),
    stop_policy: str = typer.Option(
        "none", "--stop-policy", help="none | hold (admit nothing new) | hold-and-drain."
    ),
    borrow_unnamed: bool = typer.Option(
        False,
        "--borrow-unnamed/--no-borrow-unnamed",
        help="Let the tenant borrow device types its quota does not name.",
    ),
    fair_share_weight: float = typer.Option(
        1.0, "--fair-share-weight", help="Weight in fair sharing (2 gets twice the share of 1)."
    ),
    json_out: bool = JSON_OPT,
) -> None:
    """Create or replace a tenant's quota for one device type (admin)."""
    body = {
        "tenant": tenant,
        "device_type": device,
        "nominal_cards": nominal,
        "borrowing_limit_cards": borrowing_limit,
        "lending_limit_cards": lending_limit,
        "cohort": cohort,
        "priority_class": priority,
        "tokens_per_s": tokens_per_s,
        "stop_policy": stop_policy,
        "borrow_unnamed_device_types": borrow_unnamed,
        "fair_share_weight": fair_share_weight,
    }
    _table(json_out, QUOTA_COLUMNS, "PUT", "/api/quotas", body)


@quota_app.command("list")
@handle_errors
def quota_list(json_out: bool = JSON_OPT) -> None:
    """List quotas with the cards in use."""
    _table(json_out, QUOTA_COLUMNS, "GET", "/api/quotas", title="quotas")


def _cards(field: str, pairs: list[str]) -> dict[str, int]:
    """``["rngd=2", "h100=4"]`` as ``{"rngd": 2, "h100": 4}``."""
    out: dict[str, int] = {}
    for pair in pairs:
        device, sep, cards = pair.partition("=")
        if not sep or not device or not cards.strip().isdigit():
            raise InvalidConfigError(field, pair, "use DEVICE=CARDS, e.g. rngd=2")
        out[device.strip()] = int(cards)
    return out


@cohort_app.command("set")
@handle_errors
def cohort_set(
    name: str = typer.Argument(..., help="Cohort name (tenants name it with --cohort)."),
    parent: str | None = typer.Option(None, "--parent", help="Parent cohort; unset: a root."),
    nominal: list[str] = typer.Option([], "--nominal", help="DEVICE=CARDS of its own."),
    borrowing_limit: list[str] = typer.Option(
        [], "--borrowing-limit", help="DEVICE=CARDS it may borrow from its parent."
    ),
    lending_limit: list[str] = typer.Option(
        [], "--lending-limit", help="DEVICE=CARDS it lends to its parent (unset: all)."
    ),
    fair_share_weight: float = typer.Option(1.0, "--fair-share-weight"),
    json_out: bool = JSON_OPT,
) -> None:
    """Create or replace a cohort: its parent and cards of its own (admin)."""
    body = {
        "name": name,
        "parent": parent,
        "nominal_cards": _cards("nominal", nominal),
        "borrowing_limit_cards": _cards("borrowing_limit", borrowing_limit),
        "lending_limit_cards": _cards("lending_limit", lending_limit),
        "fair_share_weight": fair_share_weight,
    }
    _table(json_out, COHORT_COLUMNS, "PUT", "/api/cohorts", body)


@cohort_app.command("list")
@handle_errors
def cohort_list(json_out: bool = JSON_OPT) -> None:
    """Cohorts with a parent or cards of their own (admin)."""
    _table(json_out, COHORT_COLUMNS, "GET", "/api/cohorts")


@cohort_app.command("delete")
@handle_errors
def cohort_delete(name: str = typer.Argument(...), json_out: bool = JSON_OPT) -> None:
    """Delete a cohort's row; its tenants stay in it as a flat cohort (admin)."""
    _delete(json_out, f"/api/cohorts/{name}", "deleted", name)


@quota_app.command("delete")
@handle_errors
def quota_delete(quota_id: int = typer.Argument(...), json_out: bool = JSON_OPT) -> None:
    """Delete a quota row (admin)."""
    _delete(json_out, f"/api/quotas/{quota_id}", "deleted", quota_id)


# --- fleet ----------------------------------------------------------------------------------
SERVER_COLUMNS = [
    "id",
    "name",
    "device_type",
    "device_kind",
    "health",
    "num_cards",
    "num_free_cards",
    "num_idle_held_cards",
]


@fleet_app.command("add")
@handle_errors
def fleet_add(
    name: str = typer.Argument(..., help="Unique server name."),
    device: str = typer.Option(..., "--device", help="Device type or alias (rngd, atom, h100)."),
    cards: int = typer.Option(..., "--cards", help="Number of cards."),
    json_out: bool = JSON_OPT,
) -> None:
    """Register a server (admin)."""
    _table(
        json_out,
        SERVER_COLUMNS,
        "POST",
        "/api/servers",
        {"name": name, "device_type": device, "num_cards": cards},
    )


@fleet_app.command("list")
@handle_errors
def fleet_list(json_out: bool = JSON_OPT) -> None:
    """List servers with free cards."""
    _table(json_out, SERVER_COLUMNS, "GET", "/api/servers", title="fleet")


@fleet_app.command("show")
@handle_errors
def fleet_show(
    ref: str = typer.Argument(..., help="Id or name."), json_out: bool = JSON_OPT
) -> None:
    """Show a server card by card."""
    doc = _call("GET", f"/api/servers/{ref}")
    if json_out:
        print_json(doc)
        return
    _show(
        doc["cards"],
        False,
        ["index", "health", "held_by", "tenant", "borrowed", "run_state"],
        f"{doc['name']} ({doc['device_type']})",
    )


@fleet_app.command("health")
@handle_errors
def fleet_health(
    ref: str = typer.Argument(..., help="Server id or name."),
    health: str = typer.Argument(..., help="healthy | degraded | down."),
    card: int | None = typer.Option(None, "--card", help="One card's index."),
    json_out: bool = JSON_OPT,
) -> None:
    """Set the health of a server or one card (admin)."""
    _table(
        json_out,
        SERVER_COLUMNS,
        "PATCH",
        f"/api/servers/{ref}",
        {"health": health, "card_index": card},
    )


@fleet_app.command("remove")
@handle_errors
def fleet_remove(ref: str = typer.Argument(...), json_out: bool = JSON_OPT) -> None:
    """Remove a server that holds no workload (admin)."""
    _delete(json_out, f"/api/servers/{ref}", "removed", ref)


# --- deployments ----------------------------------------------------------------------------
DEPLOY_COLUMNS = [
    "id",
    "tenant",
    "name",
    "model",
    "device_type",
    "tp",
    "precision",
    "replicas",
    "num_placed_replicas",
    "num_running_replicas",
    "priority_class",
    "engine",
]


@deploy_app.command("create")
@handle_errors
def deploy_create(
    name: str = typer.Argument(...),
    model: str = typer.Option(..., "--model", "-m", help="Catalog model id, e.g. llama-3.1-8b."),
    device: str = typer.Option(
        ...,
        "--device",
        "-d",
        help="Device type or alias (rngd, h100); a comma list (rngd,atom,h100) places each "
        "replica on the first with quota and room.",
    ),
    tp: int = typer.Option(1, "--tp", help="Tensor-parallel cards per replica (one server)."),
    precision: str = typer.Option("bf16", "--precision", help="bf16|fp16|fp8|int8|int4."),
    replicas: int = typer.Option(1, "--replicas", help="Replica count."),
    priority: str | None = typer.Option(None, "--priority", help="At most the tenant's class."),
    tenant: str | None = typer.Option(None, "--tenant", help="Admins deploy for a tenant."),
    engine: str = typer.Option(
        "virtual", "--engine", help="virtual|vllm|furiosa-llm|vllm-rbln|external."
    ),
    engine_option: list[str] = typer.Option(
        [],
        "--engine-option",
        help="KEY=VALUE engine option, repeatable (model_path, max_model_len, base_url, "
        "api_key_env, ...; docs/engines.md).",
    ),
    min_replicas: int | None = typer.Option(
        None, "--min-replicas", help="Autoscale: at least this many (0: to zero when idle)."
    ),
    max_replicas: int | None = typer.Option(None, "--max-replicas", help="Autoscale: at most."),
    idle_s: float | None = typer.Option(
        None, "--idle-s", help="Autoscale with --min-replicas 0: idle this long -> 0 replicas."
    ),
    json_out: bool = JSON_OPT,
) -> None:
    """Deploy an inference service (checked against the performance model)."""
    devices = [d.strip() for d in device.split(",") if d.strip()]
    if not devices:
        raise InvalidConfigError("--device", device, "name a device type, e.g. rngd or rngd,h100")
    body = {
        "name": name,
        "model": model,
        "device_type": devices[0],
        "fallback_device_types": devices[1:],
        "tp": tp,
        "precision": precision,
        "replicas": replicas,
        "priority_class": priority,
        "tenant": tenant,
        "engine": engine,
        "engine_options": _engine_options(engine_option),
        "min_replicas": min_replicas,
        "max_replicas": max_replicas,
        "idle_to_zero_s": idle_s,
    }
    _table(json_out, DEPLOY_COLUMNS, "POST", "/api/deployments", body)


def _engine_options(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs as a mapping; values are read as YAML scalars (1024, true, text)."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidConfigError("--engine-option", pair, "must be KEY=VALUE")
        out[key.strip()] = yaml.safe_load(value) if value else ""
    return out


@deploy_app.command("list")
@handle_errors
def deploy_list(json_out: bool = JSON_OPT) -> None:
    """List deployments (with their SLO attainment over the gateway's last 5 minutes)."""
    _show(
        _call("GET", "/api/deployments"),
        json_out,
        [*DEPLOY_COLUMNS, "slo_attainment"],
        "deployments",
        fmt={"slo_attainment": _slo_short},
    )


def _slo_short(att: dict[str, Any] | None) -> str:
    if att is None:
        return "-"
    if att["fraction"] is None:
        return "no request"
    return f"{att['fraction']:.1%} of {att['num_requests']}"


@deploy_app.command("show")
@handle_errors
def deploy_show(dep_id: int = typer.Argument(...), json_out: bool = JSON_OPT) -> None:
    """Show a deployment replica by replica."""
    doc = _call("GET", f"/api/deployments/{dep_id}")
    try:
        doc["engines"] = _call("GET", f"/api/deployments/{dep_id}/engines")
    except NotFoundError:  # the deployment exists: this server runs no gateway, so no engine
        doc["engines"] = []
    if json_out:
        print_json(doc)
        return
    _show(
        doc["replica_states"],
        False,
        [
            "index",
            "state",
            "server",
            "card_indexes",
            "num_borrowed_cards",
            "device_type",
            "run_state",
            "run_reason",
        ],
        f"{doc['name']}: {doc['model']} on {','.join(doc.get('device_types') or [doc['device_type']])}"
        f" TP={doc['tp']}",
    )
    console.print(
        f"SLO attainment: {slo_attainment_text(doc.get('slo_attainment'))}", highlight=False
    )
    if doc["engines"]:
        _show(
            doc["engines"],
            False,
            ["replica_id", "engine", "state", "base_url", "restarts", "error"],
            "engines",
        )


@deploy_app.command("logs")
@handle_errors
def deploy_logs(
    dep_id: int = typer.Argument(...),
    json_out: bool = JSON_OPT,
) -> None:
    """The last lines each replica's engine wrote (a failed start shows why it failed)."""
    engines = _call("GET", f"/api/deployments/{dep_id}/engines")
    if json_out:
        print_json([{k: e[k] for k in ("replica_id", "state", "log_tail")} for e in engines])
        return
    for e in engines:
        console.print(f"== {e['replica_id']} ({e['engine']}, {e['state']})", highlight=False)
        if e.get("error"):
            console.print(f"error: {e['error']}", highlight=False, markup=False)
        console.print(e.get("log_tail") or "(no output)", highlight=False, markup=False)


@deploy_app.command("scale")
@handle_errors
def deploy_scale(
    dep_id: int = typer.Argument(...),
    replicas: int = typer.Argument(...),
    json_out: bool = JSON_OPT,
) -> None:
    """Scale a deployment."""
    _table(json_out, DEPLOY_COLUMNS, "PATCH", f"/api/deployments/{dep_id}", {"replicas": replicas})


AUTOSCALE_COLUMNS = ["id", "tenant", "name", "replicas", "min_replicas", "max_replicas"]
AUTOSCALE_COLUMNS += ["idle_to_zero_s", "num_running_replicas"]


@deploy_app.command("autoscale")
@handle_errors
def deploy_autoscale(
    ref: str = typer.Argument(..., help="Deployment name or id."),
    min_replicas: int | None = typer.Option(None, "--min", help="At least this many (0: to zero)."),
    max_replicas: int | None = typer.Option(None, "--max", help="At most (within the quota)."),
    idle_s: float | None = typer.Option(
        None, "--idle-s", help="With --min 0: idle this many seconds -> 0 replicas."
    ),
    tenant: str | None = typer.Option(None, "--tenant", help="Admins: the owner of NAME."),
    json_out: bool = JSON_OPT,
) -> None:
    """Set a deployment's autoscaling bounds (the autoscaler uses them at its next tick)."""
    body = {
        k: v
        for k, v in (
            ("min_replicas", min_replicas),
            ("max_replicas", max_replicas),
            ("idle_to_zero_s", idle_s),
        )
        if v is not None
    }
    if not body:
        raise InvalidConfigError("deploy autoscale", ref, "give --min, --max or --idle-s")
    dep_id = _deployment_id(ref, tenant)
    _table(json_out, AUTOSCALE_COLUMNS, "PATCH", f"/api/deployments/{dep_id}", body)


def _deployment_id(ref: str, tenant: str | None) -> int:
    """The id of the deployment named ``ref`` (or ``ref`` itself when it is an id)."""
    if ref.isdigit():
        return int(ref)
    found = [
        d
        for d in _call("GET", "/api/deployments")
        if d["name"] == ref and (tenant is None or d["tenant"] == tenant)
    ]
    if len(found) == 1:
        return int(found[0]["id"])
    if not found:
        raise NotFoundError("deployment", ref)
    owners = ", ".join(sorted(d["tenant"] for d in found))
    raise InvalidConfigError(
        "deployment", ref, f"several tenants have one of this name ({owners}); give --tenant"
    )


@deploy_app.command("delete")
@handle_errors
def deploy_delete(dep_id: int = typer.Argument(...), json_out: bool = JSON_OPT) -> None:
    """Delete a deployment."""
    _delete(json_out, f"/api/deployments/{dep_id}", "deleted", dep_id)


# --- jobs -----------------------------------------------------------------------------------


@job_app.command("submit")
@handle_errors
def job_submit(
    name: str = typer.Argument(...),
    command: list[str] | None = typer.Argument(None, help="Command (after --)."),
    kind: str | None = typer.Option(
        None, "--kind", help="finetune | preprocess | benchmark (simulate | plan: from a job file)."
    ),
    device: str | None = typer.Option(
        None, "--device", "-d", help="Device type or alias (rngd, h100)."
    ),
    cards: int = typer.Option(1, "--cards", help="Cards, all on one server (a gang)."),
    image: str | None = typer.Option(None, "--image", help="Container image to run."),
    priority: str | None = typer.Option(
        None,
        "--priority",
        help="At most the tenant's class: production|research|education|best-effort.",
    ),
    tenant: str | None = typer.Option(None, "--tenant", help="Admins submit for a tenant."),
    fallback_device: list[str] = typer.Option(
        [], "--fallback-device", help="Also accept this device type (in order; repeat)."
    ),
    json_out: bool = JSON_OPT,
) -> None:
    """Submit a job: `npucenter job submit ft --kind finetune -d h100 --cards 2 -- python train.py`,
    or the job a YAML file describes: `npucenter job submit examples/jobs/lora-tiny.yaml`."""
    if kind is None and name.endswith((".yaml", ".yml")):
        from pathlib import Path

        from npucenter.cli.artifacts import submit_job_file

        submit_job_file(Path(name), tenant=tenant, json_out=json_out)
        return
    if kind is None or device is None:
        raise InvalidConfigError(
            "job submit", name, "give --kind and --device, or a job file (.yaml)"
        )
    body = {
        "name": name,
        "kind": kind,
        "device_type": device,
        "num_cards": cards,
        "image": image,
        "command": list(command or []),
        "priority_class": priority,
        "tenant": tenant,
        "fallback_device_types": list(fallback_device),
    }
    _table(json_out, JOB_COLUMNS, "POST", "/api/jobs", body)


@job_app.command("list")
@handle_errors
def job_list(state: str | None = typer.Option(None, "--state"), json_out: bool = JSON_OPT) -> None:
    """List jobs."""
    _table(json_out, JOB_COLUMNS, "GET", "/api/jobs", title="jobs", state=state)


@job_app.command("show")
@handle_errors
def job_show(job_id: int = typer.Argument(...), json_out: bool = JSON_OPT) -> None:
    """Show a job and its history."""
    with _api() as api:
        doc = api.get(f"/api/jobs/{job_id}")
        doc["events"] = api.get(f"/api/jobs/{job_id}/events")
    if json_out:
        print_json(doc)
        return
    _show(doc, False, JOB_COLUMNS)
    _show(doc["events"], False, ["at_s", "from_state", "to_state", "reason"], "history")
    if doc.get("exit_code") is not None or doc.get("failure_reason"):
        console.print(
            f"exit code: {_cell(doc.get('exit_code'))}"
            + (
                f"  ({doc['failure_code']}: {doc['failure_reason']})"
                if doc.get("failure_reason")
                else ""
            ),
            highlight=False,
            soft_wrap=True,
        )
    if doc.get("log_tail"):
        console.print("log tail:", style="bold")
        console.print(escape(doc["log_tail"]), highlight=False, soft_wrap=True)
    if doc.get("has_result"):
        console.print(f"result: `npucenter job result {job_id}`", highlight=False)


@job_app.command("result")
@handle_errors
def job_result(
    job_id: int = typer.Argument(...),
    json_out: bool = JSON_OPT,
    output: str | None = typer.Option(None, "--output", "-o", help="Also write the JSON here."),
) -> None:
    """Show a job's stored result (a benchmark's JSON): its headline, or all of it with --json."""
    doc = _call("GET", f"/api/jobs/{job_id}/result")
    if output:
        from pathlib import Path

        Path(output).write_text(json.dumps(doc, indent=2) + "\n")
    if json_out:
        print_json(doc)
        return
    _show(_result_rows(doc), False, ["part", "metric", "value"], f"job {job_id} result")


def _result_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Headline numbers of a bench run (``summary``) or suite (``headline``), else top-level scalars."""
    rows: list[dict[str, Any]] = []
    parts: list[tuple[str, Any]] = []
    if isinstance(doc.get("headline"), dict):
        parts = sorted(doc["headline"].items())
    elif isinstance(doc.get("summary"), dict):
        parts = [("summary", doc["summary"])]
    else:
        parts = [("", doc)]
    for part, values in parts:
        if not isinstance(values, dict):
            continue
        for metric, value in values.items():
            if isinstance(value, dict) and "p50" in value:
                value = f"p50 {_cell(value.get('p50'))} p99 {_cell(value.get('p99'))}"
            if value is None or isinstance(value, int | float | str):
                rows.append({"part": part, "metric": metric, "value": value})
    return rows


@job_app.command("cancel")
@handle_errors
def job_cancel(job_id: int = typer.Argument(...), json_out: bool = JSON_OPT) -> None:
    """Cancel a job."""
    _table(json_out, JOB_COLUMNS, "POST", f"/api/jobs/{job_id}/cancel")


@job_app.command("set-state")
@handle_errors
def job_set_state(
    job_id: int = typer.Argument(...),
    state: str = typer.Argument(..., help="running | succeeded | failed | cancelled."),
    reason: str = typer.Option("", "--reason"),
    json_out: bool = JSON_OPT,
) -> None:
    """Report a job's state (executors and admins)."""
    _table(
        json_out,
        JOB_COLUMNS,
        "POST",
        f"/api/jobs/{job_id}/state",
        {"state": state, "reason": reason},
    )


# --- usage ----------------------------------------------------------------------------------
@usage_app.command("list")
@handle_errors
def usage_list(
    tenant: str | None = typer.Option(None, "--tenant"),
    kind: str | None = typer.Option(None, "--kind"),
    json_out: bool = JSON_OPT,
) -> None:
    """List ledger rows."""
    _table(
        json_out,
        [
            "id",
            "tenant",
            "kind",
            "device_type",
            "device_seconds",
            "tokens_in",
            "tokens_out",
            "energy_j",
            "cost_usd",
            "ref",
        ],
        "GET",
        "/api/usage",
        title="usage ledger",
        tenant=tenant,
        kind=kind,
    )


@usage_app.command("summary")
@handle_errors
def usage_summary(
    tenant: str | None = typer.Option(None, "--tenant"),
    kind: str | None = typer.Option(None, "--kind"),
    by: str = typer.Option("tenant,kind", "--by", help="comma-separated: tenant, kind, model"),
    bucket_s: float | None = typer.Option(None, "--bucket-s", help="also per time bucket"),
    json_out: bool = JSON_OPT,
) -> None:
    """Totals per tenant and kind (or --by), per time bucket with --bucket-s."""
    groups = [g.strip() for g in by.split(",") if g.strip()]
    columns = [*groups, *(["bucket_start_s"] if bucket_s else [])]
    columns += ["device_seconds", "tokens_in", "tokens_out", "energy_j", "cost_usd", "num_entries"]
    _table(
        json_out,
        columns,
        "GET",
        "/api/usage/summary",
        title="usage",
        tenant=tenant,
        kind=kind,
        by=by,
        bucket_s=bucket_s,
    )


@usage_app.command("checkpoint")
@handle_errors
def usage_checkpoint(json_out: bool = JSON_OPT) -> None:
    """Bill every held card up to now (admin)."""
    _table(
        json_out,
        ["id", "tenant", "kind", "device_seconds", "ref"],
        "POST",
        "/api/usage/checkpoint",
        title="billed",
    )


# --- admission ------------------------------------------------------------------------------
@admission_app.command("run")
@handle_errors
def admission_run(json_out: bool = JSON_OPT) -> None:
    """Run one admission cycle now (admin)."""
    doc = _call("POST", "/api/admission/cycle")
    if json_out:
        print_json(doc)
        return
    _show(
        doc["admitted"],
        False,
        ["workload", "tenant", "server", "card_indexes", "num_borrowed_cards"],
        "admitted",
    )
    _show(doc["preempted"], False, ["workload", "tenant", "reason"], "preempted")
    console.print(f"still pending: {doc['num_still_pending']}")
