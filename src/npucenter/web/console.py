"""The console at ``/console``: tenants' and the operator's pages, a view of the control-plane API.

Every page calls the same functions the ``/api`` routes run (``npucenter.api.routes.*``) with a
:class:`RequestContext` of the signed-in key, so a page can show or do nothing the API cannot,
and a tenant's scope is the API's: another tenant's object is a 404 here too, also by URL.

Sign-in takes an API key by form POST (never in a URL or a log); failed sign-ins are limited per
client address and key prefix (429, Retry-After). The session is a row in the database (a hash
of a random token in a cookie: HttpOnly, SameSite=Strict, Secure off loopback, path
``/console``), shared by every process on it (:mod:`npucenter.web.sessions`); the key that
signed in is checked on every request, so revoking it signs the session out. Every
form carries the session's CSRF token (the sign-in form a double-submit one); a POST without it
is refused (403). Server-rendered, no script: a Content-Security-Policy forbids scripts. The
pages' database work runs in the thread pool, never on the event loop the gateway shares.
"""

from __future__ import annotations

import copy
import csv
import functools
import hmac
import inspect
import io
import re
import secrets
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jinja2
import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from npucenter.api.context import ControlPlane, RequestContext, admin_context
from npucenter.api.routes import artifacts as artifacts_routes
from npucenter.api.routes import deployments as deployment_routes
from npucenter.api.routes import fleet as fleet_routes
from npucenter.api.routes import jobs as job_routes
from npucenter.api.routes import quotas as quota_routes
from npucenter.api.routes import tenants as tenant_routes
from npucenter.api.routes import usage as usage_routes
from npucenter.api.schemas import (
    DeploymentIn,
    DeploymentPatch,
    JobIn,
    KeyIn,
    QuotaIn,
    UsageOut,
    UsageSummaryRow,
)
from npucenter.api.views import slo_attainment_text
from npucenter.bench.report import build_report, render_html
from npucenter.errors import (
    AuthenticationError,
    InvalidConfigError,
    NotFoundError,
    NpuCenterError,
)
from npucenter.files.fleet import read_fleet_file
from npucenter.fleet.model import default_fleet_mapping
from npucenter.jobs.twin import MAX_SIM_REQUESTS, TWIN_KINDS
from npucenter.policy.principal import Principal
from npucenter.policy.routing import ROUTING_POLICIES
from npucenter.render.svg import Series, bar_chart, line_chart
from npucenter.sim.report import report_charts
from npucenter.web.dashboard import replica_rows
from npucenter.web.sessions import SESSION_IDLE_S, ConsoleSessions, SignInLimiter
from npucenter.workload import AZURE_TRACES

__all__ = ["SESSION_COOKIE", "SESSION_IDLE_S", "ConsoleSessions", "install_console"]

SESSION_COOKIE = "npc_console"
LOGIN_CSRF_COOKIE = "npc_console_login"
_MAX_FORM_BYTES = 64 * 1024
_CHART_POINTS = 300  # per line: a chart is 640 px wide
_LOOPBACK = ("127.0.0.1", "::1", "localhost")
_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_HEADERS = {
    "content-security-policy": _CSP,
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}
_PAGES = ("console_pages.html",)
_env = jinja2.Environment(
    loader=jinja2.DictLoader(
        {
            name: resources.files("npucenter.web").joinpath(f"templates/{name}").read_text()
            for name in _PAGES
        }
    ),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
_env.filters["num"] = lambda v: f"{v:,.0f}" if isinstance(v, float) else f"{v:,}"
_env.filters["fix"] = lambda v, n=2: f"{v:,.{n}f}" if isinstance(v, int | float) else "—"
_env.filters["slo_text"] = slo_attainment_text
_env.filters["when"] = lambda s: (
    "—" if s is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(s))
)


class _Redirect(Exception):
    def __init__(self, to: str) -> None:
        self.to = to


@dataclass
class _Page:
    """One request's signed-in caller: its API context, session token and CSRF token."""

    ctx: RequestContext
    token: str
    csrf: str

    @property
    def is_admin(self) -> bool:
        return self.ctx.is_admin

    @property
    def who(self) -> str:
        p = self.ctx.principal
        return "admin" if p.is_admin else f"tenant {p.tenant}"


def _secure(request: Request) -> bool:
    client = request.client.host if request.client else ""
    return request.url.scheme == "https" or client not in _LOOPBACK


async def _form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > _MAX_FORM_BYTES:
        raise _Refused(413, "the form is too large")
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        raise _Refused(415, "send the form as application/x-www-form-urlencoded")
    parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[-1] for k, v in parsed.items()}


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message


def install_console(app: FastAPI, *, public_results: bool = False) -> ConsoleSessions:
    """Add the console's pages under ``/console`` to an app made by ``create_app``.

    ``public_results``: the proving ground's page is readable without signing in.
    """
    sessions = ConsoleSessions(control=lambda: control())  # rows in the database
    limiter = SignInLimiter()  # failed sign-ins, per client address and key prefix
    app.state.console_sessions = sessions
    app.state.console_sign_in_limiter = limiter

    def control() -> ControlPlane:
        c: ControlPlane = app.state.control
        return c

    def page(request: Request) -> _Page:
        token = request.cookies.get(SESSION_COOKIE, "")
        session = sessions.get(token) if token else None  # None too once its key is revoked
        if session is None:
            raise _Redirect("/console/login")
        return _Page(
            ctx=RequestContext(control=control(), principal=session.principal),
            token=token,
            csrf=session.csrf,
        )

    def html(template: str, status: int = 200, **values: Any) -> HTMLResponse:
        text = _env.get_template("console_pages.html").render(page_name=template, **values)
        return HTMLResponse(text, status_code=status, headers=_HEADERS)

    def fail(p: _Page | None, status: int, message: str, hint: str = "") -> HTMLResponse:
        return html(
            "error", status, p=p, title=f"{status}", message=message, hint=hint, nav=_nav(p)
        )

    def handle(
        fn: Callable[..., Response],
    ) -> Callable[..., Any]:
        """A signed-in page: a POST's form is read and its CSRF token checked first; the body
        (database work) runs in the thread pool, off the event loop the gateway shares."""

        async def run(request: Request, **kw: Any) -> Response:
            p: _Page | None = None
            try:
                p = await run_in_threadpool(page, request)
                form: dict[str, str] = {}
                if request.method == "POST":
                    form = await _form(request)
                    if not hmac.compare_digest(form.get("csrf", ""), p.csrf):
                        raise _Refused(
                            403, "this form has no valid CSRF token: reload the page and retry"
                        )
                return await run_in_threadpool(fn, request, p, form, **kw)
            except _Redirect as r:
                return RedirectResponse(r.to, status_code=303, headers=_HEADERS)
            except _Refused as r:
                return fail(p, r.status, r.message)
            except NpuCenterError as exc:
                return fail(p, exc.http_status, exc.message, exc.hint)
            except ValidationError as exc:
                return fail(p, 422, _validation_text(exc))

        run.__name__ = fn.__name__
        params = [v for k, v in inspect.signature(fn).parameters.items() if k not in ("p", "form")]
        run.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        return run

    # ---- sign-in -------------------------------------------------------------------------

    @app.get("/console/login", include_in_schema=False)
    def login_form(request: Request) -> Response:
        csrf = request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(24)
        response = html("login", p=None, csrf=csrf, nav=[], error="")
        _set_cookie(response, request, LOGIN_CSRF_COOKIE, csrf, max_age=3600)
        return response

    @app.post("/console/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        try:
            form = await _form(request)
        except _Refused as r:
            return fail(None, r.status, r.message)
        cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
        if not cookie or not hmac.compare_digest(form.get("csrf", ""), cookie):
            return fail(None, 403, "the sign-in form has no valid CSRF token: reload and retry")
        secret = form.get("key", "").strip()
        client = request.client.host if request.client else ""
        wait_s = limiter.retry_after_s(client, secret)
        if wait_s:  # refused before any key is checked
            error = f"too many failed sign-ins from here or for this key: try again in {wait_s} s"
            refused = html("login", 429, p=None, csrf=cookie, nav=[], error=error)
            refused.headers["retry-after"] = str(wait_s)
            return refused
        try:
            principal = await run_in_threadpool(control().authenticate, secret)
        except AuthenticationError:
            limiter.failed(client, secret)
            return html("login", 401, p=None, csrf=cookie, nav=[], error="that key is not valid")
        except NpuCenterError as exc:
            return fail(None, exc.http_status, exc.message, exc.hint)
        token, _ = await run_in_threadpool(sessions.open, principal)
        response = RedirectResponse("/console", status_code=303, headers=_HEADERS)
        _set_cookie(response, request, SESSION_COOKIE, token)
        response.delete_cookie(LOGIN_CSRF_COOKIE, path="/console")
        return response

    @app.post("/console/logout", include_in_schema=False)
    @handle
    def logout(request: Request, p: _Page, form: dict[str, str]) -> Response:
        sessions.close(p.token)
        response = RedirectResponse("/console/login", status_code=303, headers=_HEADERS)
        response.delete_cookie(SESSION_COOKIE, path="/console")
        return response

    @app.get("/console", include_in_schema=False)
    @handle
    def home(request: Request, p: _Page, form: dict[str, str]) -> Response:
        return RedirectResponse(
            "/console/fleet" if p.is_admin else "/console/usage", status_code=303
        )

    # ---- tenant pages ---------------------------------------------------------------------

    @app.get("/console/usage", include_in_schema=False)
    @handle
    def usage(request: Request, p: _Page, form: dict[str, str]) -> Response:
        groups = _usage_summary(p.ctx, by="tenant,kind,model")
        table = _usage_table(groups)
        totals = _sum_rows(table)
        return html(
            "usage",
            p=p,
            nav=_nav(p),
            title="Usage",
            table=table,
            totals=totals,
            chart=_usage_chart(p.ctx, groups),
            num_rows=totals["entries"],
        )

    @app.get("/console/usage.csv", include_in_schema=False)
    @handle
    def usage_csv(request: Request, p: _Page, form: dict[str, str]) -> Response:
        rows = usage_routes.list_usage(
            tenant=None, kind=None, since_s=None, limit=100_000, ctx=p.ctx
        )
        out = io.StringIO()
        fields = list(UsageOut.model_fields)
        writer = csv.writer(out)
        writer.writerow(fields)
        for r in rows:
            writer.writerow([_cell(getattr(r, f)) for f in fields])
        return Response(
            out.getvalue(),
            media_type="text/csv",
            headers={**_HEADERS, "content-disposition": 'attachment; filename="usage.csv"'},
        )

    @app.get("/console/quotas", include_in_schema=False)
    @handle
    def quotas(request: Request, p: _Page, form: dict[str, str]) -> Response:
        rows = quota_routes.list_quotas(ctx=p.ctx)
        tenants = tenant_routes.list_tenants(ctx=p.ctx) if p.is_admin else []
        return html(
            "quotas",
            p=p,
            nav=_nav(p),
            title="Quotas",
            rows=rows,
            tenants=tenants,
            selected=request.query_params.get("tenant", ""),
        )

    @app.post("/console/quotas", include_in_schema=False)
    @handle
    def quota_set(request: Request, p: _Page, form: dict[str, str]) -> Response:
        fields: dict[str, Any] = {
            k: form[k]
            for k in ("tenant", "device_type", "nominal_cards", "priority_class")
            if form.get(k, "") != ""
        }
        for k in ("borrowing_limit_cards", "lending_limit_cards", "tokens_per_s", "cohort"):
            if form.get(k, "").strip():
                fields[k] = form[k].strip()
        body = QuotaIn.model_validate(fields, strict=False)  # the API's own validation
        quota_routes.set_quota(body, ctx=admin_context(p.ctx))  # the route's own check: 403
        return RedirectResponse("/console/quotas", status_code=303, headers=_HEADERS)

    @app.get("/console/keys", include_in_schema=False)
    @handle
    def keys(request: Request, p: _Page, form: dict[str, str]) -> Response:
        rows = tenant_routes.list_keys(ctx=p.ctx)
        return html("keys", p=p, nav=_nav(p), title="API keys", rows=rows, created=None)

    @app.post("/console/keys", include_in_schema=False)
    @handle
    def key_create(request: Request, p: _Page, form: dict[str, str]) -> Response:
        body = KeyIn.model_validate(
            {"name": form.get("name", ""), "tenant": form.get("tenant") or None}
        )
        created = tenant_routes.create_key(body, ctx=p.ctx)
        rows = tenant_routes.list_keys(ctx=p.ctx)
        return html("keys", 201, p=p, nav=_nav(p), title="API keys", rows=rows, created=created)

    @app.post("/console/keys/{key_id}/revoke", include_in_schema=False)
    @handle
    def key_revoke(request: Request, p: _Page, form: dict[str, str], key_id: int) -> Response:
        tenant_routes.revoke_key(key_id, ctx=p.ctx)
        return RedirectResponse("/console/keys", status_code=303, headers=_HEADERS)

    def deployments_page(p: _Page, status: int = 200, error: str = "", **kept: str) -> Response:
        rows = deployment_routes.list_deployments(ctx=p.ctx)
        return html(
            "deployments",
            status,
            p=p,
            nav=_nav(p),
            title="Deployments",
            rows=rows,
            error=error,
            kept=kept,
            devices=_device_choices(p),
        )

    @app.get("/console/deployments", include_in_schema=False)
    @handle
    def deployments(request: Request, p: _Page, form: dict[str, str]) -> Response:
        return deployments_page(p)

    @app.post("/console/deployments", include_in_schema=False)
    @handle
    def deployment_create(request: Request, p: _Page, form: dict[str, str]) -> Response:
        fields: dict[str, Any] = {
            k: form[k].strip()
            for k in ("name", "model", "device_type", "tp", "precision", "replicas", "engine")
            if form.get(k, "").strip()
        }
        if p.is_admin and form.get("tenant", "").strip():
            fields["tenant"] = form["tenant"].strip()
        kept = {k: str(v) for k, v in fields.items()}
        try:  # the API's validation and checks; its message shown above the form
            body = DeploymentIn.model_validate(fields, strict=False)
            dep = deployment_routes.create_deployment(body, ctx=p.ctx)
        except NpuCenterError as exc:
            message = exc.message + (f" ({exc.hint})" if exc.hint else "")
            return deployments_page(p, exc.http_status, message, **kept)
        except ValidationError as exc:
            return deployments_page(p, 422, _validation_text(exc), **kept)
        return RedirectResponse(f"/console/deployments/{dep.id}", status_code=303, headers=_HEADERS)

    def deployment_page(
        p: _Page, dep_id: int, status: int = 200, error: str = "", **kept: str
    ) -> Response:
        one = deployment_routes.get_deployment(dep_id, ctx=p.ctx)  # 404 for another tenant's
        engines_of = getattr(app.state, "deployment_engines", None)  # `npucenter up`'s route
        engines = engines_of(dep_id, ctx=p.ctx) if engines_of is not None else None
        return html(
            "deployment",
            status,
            p=p,
            nav=_nav(p),
            title=f"Deployment {one.id}",
            dep=one,
            engines=engines,
            starting=any(e.get("state") in ("pending", "starting") for e in engines or []),
            error=error,
            kept=kept,
        )

    @app.get("/console/deployments/{dep_id}", include_in_schema=False)
    @handle
    def deployment(request: Request, p: _Page, form: dict[str, str], dep_id: int) -> Response:
        return deployment_page(p, dep_id)

    def patch_deployment(p: _Page, dep_id: int, fields: dict[str, Any]) -> Response:
        """PATCH /api/deployments/ID with the form's fields; the API's refusal shown on the
        deployment's page with what was typed kept."""
        kept = {k: "" if v is None else str(v) for k, v in fields.items()}
        try:
            body = DeploymentPatch.model_validate(fields, strict=False)
            deployment_routes.scale_deployment(dep_id, body, ctx=p.ctx)
        except NpuCenterError as exc:
            if exc.http_status == 404:
                raise
            message = exc.message + (f" ({exc.hint})" if exc.hint else "")
            return deployment_page(p, dep_id, exc.http_status, message, **kept)
        except ValidationError as exc:
            return deployment_page(p, dep_id, 422, _validation_text(exc), **kept)
        return RedirectResponse(f"/console/deployments/{dep_id}", status_code=303, headers=_HEADERS)

    @app.post("/console/deployments/{dep_id}/scale", include_in_schema=False)
    @handle
    def deployment_scale(request: Request, p: _Page, form: dict[str, str], dep_id: int) -> Response:
        return patch_deployment(p, dep_id, {"replicas": form.get("replicas", "").strip() or None})

    @app.post("/console/deployments/{dep_id}/autoscale", include_in_schema=False)
    @handle
    def deployment_autoscale(
        request: Request, p: _Page, form: dict[str, str], dep_id: int
    ) -> Response:
        # every bound is sent: an empty field is null (all three empty: a fixed count again)
        fields = {
            k: form.get(k, "").strip() or None
            for k in ("min_replicas", "max_replicas", "idle_to_zero_s")
        }
        return patch_deployment(p, dep_id, fields)

    @app.post("/console/deployments/{dep_id}/delete", include_in_schema=False)
    @handle
    def deployment_delete(
        request: Request, p: _Page, form: dict[str, str], dep_id: int
    ) -> Response:
        deployment_routes.delete_deployment(dep_id, ctx=p.ctx)  # 404 for another tenant's
        return RedirectResponse("/console/deployments", status_code=303, headers=_HEADERS)

    @app.get("/console/jobs", include_in_schema=False)
    @handle
    def jobs(request: Request, p: _Page, form: dict[str, str]) -> Response:
        rows = job_routes.list_jobs(state=None, ctx=p.ctx)
        return html("jobs", p=p, nav=_nav(p), title="Jobs", rows=rows, reasons=_reasons(p, rows))

    @app.post("/console/jobs", include_in_schema=False)
    @handle
    def job_submit(request: Request, p: _Page, form: dict[str, str]) -> Response:
        fields: dict[str, Any] = {
            "name": form.get("name", ""),
            "kind": form.get("kind", ""),
            "device_type": form.get("device_type", ""),
            "num_cards": form.get("num_cards") or 1,
            "command": form.get("command", "").split(),
        }
        if form.get("tenant"):
            fields["tenant"] = form["tenant"]
        job = job_routes.submit_job(JobIn.model_validate(fields, strict=False), ctx=p.ctx)
        return RedirectResponse(f"/console/jobs/{job.id}", status_code=303, headers=_HEADERS)

    @app.get("/console/jobs/{job_id}", include_in_schema=False)
    @handle
    def job(request: Request, p: _Page, form: dict[str, str], job_id: int) -> Response:
        one = job_routes.get_job(job_id, ctx=p.ctx)  # 404 for another tenant's
        events = job_routes.job_events(job_id, ctx=p.ctx)
        result = job_routes.get_job_result(job_id, ctx=p.ctx) if one.has_result else None
        return html(
            "job", p=p, nav=_nav(p), title=f"Job {one.id}", job=one, events=events, result=result
        )

    @app.post("/console/jobs/{job_id}/cancel", include_in_schema=False)
    @handle
    def job_cancel(request: Request, p: _Page, form: dict[str, str], job_id: int) -> Response:
        job_routes.cancel_job(job_id, ctx=p.ctx)
        return RedirectResponse(f"/console/jobs/{job_id}", status_code=303, headers=_HEADERS)

    @app.get("/console/data", include_in_schema=False)
    @handle
    def data(request: Request, p: _Page, form: dict[str, str]) -> Response:
        return html(
            "data",
            p=p,
            nav=_nav(p),
            title="Data sets and adapters",
            datasets=artifacts_routes.list_datasets(ctx=p.ctx),
            adapters=artifacts_routes.list_adapters(ctx=p.ctx),
        )

    # ---- operator pages -------------------------------------------------------------------

    def fleet_body(
        request: Request, p: _Page, form: dict[str, str], power: dict[str, float] | None = None
    ) -> Response:
        servers = fleet_routes.list_servers(ctx=p.ctx)
        grid = [_server_view(s, power) for s in servers]
        counts: dict[str, int] = defaultdict(int)
        for s in grid:
            for c in s["cards"]:
                counts[c["state"]] += 1
        npu = [s for s in grid if s["kind"] == "NPU"]
        share = {  # the NPU share: of the cards, and of the cards at work
            "npu_cards": sum(len(s["cards"]) for s in npu),
            "cards": sum(len(s["cards"]) for s in grid),
            "npu_busy": sum(s["busy"] for s in npu),
            "busy": sum(s["busy"] for s in grid),
        }
        totals = {
            "now_w": sum(s["power_w"] or 0.0 for s in grid),
            "tdp_w": sum(s["tdp_w"] or 0.0 for s in grid),
            "live": power is not None,
        }
        return html(
            "fleet",
            p=p,
            nav=_nav(p),
            title="Fleet",
            grid=grid,
            counts=dict(counts),
            power=totals,
            share=share,
        )

    fleet_page = handle(fleet_body)

    @app.get("/console/fleet", include_in_schema=False)
    async def fleet(request: Request) -> Response:
        # the gateway's replicas are read here, on its event loop (as the dashboard does)
        return await fleet_page(request, power=_power_now(app))  # type: ignore[no-any-return]

    @app.get("/console/tenants", include_in_schema=False)
    @handle
    def tenants(request: Request, p: _Page, form: dict[str, str]) -> Response:
        ctx = admin_context(p.ctx)  # the operator's page: 403 for a tenant
        quotas_by: dict[str, list[Any]] = defaultdict(list)
        for q in quota_routes.list_quotas(ctx=ctx):
            quotas_by[q.tenant].append(q)
        usage_by: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for u in usage_routes.usage_summary(tenant=None, ctx=ctx):
            t = usage_by[u.tenant or ""]
            t["tokens"] += u.tokens_in + u.tokens_out
            t["device_hours"] += u.device_seconds / 3600.0
            t["energy_kwh"] += u.energy_j / 3.6e6
            t["entries"] += u.num_entries
        rows = [
            {"t": t, "quotas": quotas_by.get(t.name, []), "usage": usage_by.get(t.name, {})}
            for t in tenant_routes.list_tenants(ctx=ctx)
        ]
        return html("tenants", p=p, nav=_nav(p), title="Tenants", rows=rows)

    @app.get("/console/queue", include_in_schema=False)
    @handle
    def queue(request: Request, p: _Page, form: dict[str, str]) -> Response:
        rows = [
            *job_routes.list_jobs(state="queued", ctx=p.ctx),
            *job_routes.list_jobs(state="preempted", ctx=p.ctx),
        ]
        rows.sort(key=lambda j: (j.created_at_s, j.id))
        return html(
            "queue", p=p, nav=_nav(p), title="Admission queue", rows=rows, reasons=_reasons(p, rows)
        )

    # ---- the twin: simulate / plan as jobs ---------------------------------------------------

    def twin_page(p: _Page, status: int = 200, error: str = "") -> Response:
        rows = [j for j in job_routes.list_jobs(state=None, ctx=p.ctx) if j.kind in TWIN_KINDS]
        return html(
            "twin",
            status,
            p=p,
            nav=_nav(p),
            title="Twin",
            rows=rows[::-1],
            fleets=list(_twin_fleets(control()).items()),
            plans=list(_twin_plans().items()),
            traces=[*AZURE_TRACES, "synthetic"],
            policies=ROUTING_POLICIES.names(),
            devices=_device_choices(p),
            max_requests=MAX_SIM_REQUESTS,
            error=error,
        )

    @app.get("/console/twin", include_in_schema=False)
    @handle
    def twin(request: Request, p: _Page, form: dict[str, str]) -> Response:
        return twin_page(p)

    @app.post("/console/twin", include_in_schema=False)
    @handle
    def twin_submit(request: Request, p: _Page, form: dict[str, str]) -> Response:
        try:
            body = _twin_job(form, control())
            if p.is_admin and form.get("tenant", "").strip():
                body.tenant = form["tenant"].strip()
            job = job_routes.submit_job(body, ctx=p.ctx)  # the API's checks: quota, spec
        except NpuCenterError as exc:
            message = exc.message + (f" ({exc.hint})" if exc.hint else "")
            return twin_page(p, exc.http_status, message)
        except ValidationError as exc:
            return twin_page(p, 422, _validation_text(exc))
        return RedirectResponse(f"/console/twin/{job.id}", status_code=303, headers=_HEADERS)

    @app.get("/console/twin/{job_id}", include_in_schema=False)
    @handle
    def twin_run(request: Request, p: _Page, form: dict[str, str], job_id: int) -> Response:
        one = job_routes.get_job(job_id, ctx=p.ctx)  # 404 for another tenant's
        if one.kind not in TWIN_KINDS:
            raise NotFoundError("twin job", str(job_id))
        doc = job_routes.get_job_result(job_id, ctx=p.ctx) if one.has_result else None
        report = _twin_report(one.kind, doc) if doc is not None else None
        return html(
            "twin_run",
            p=p,
            nav=_nav(p),
            title=f"Twin job {one.id}",
            job=one,
            progress=_twin_progress(one.log_tail or ""),
            report=report,
        )

    def results_ctx(request: Request) -> tuple[_Page | None, RequestContext] | Response:
        try:
            p = page(request)
        except _Redirect as r:
            if not public_results:
                return RedirectResponse(r.to, status_code=303, headers=_HEADERS)
            return None, _public_ctx(control())
        return p, p.ctx

    def benchmark_docs(ctx: RequestContext) -> list[tuple[Any, dict[str, Any]]]:
        jobs = job_routes.list_jobs(state=None, ctx=ctx)
        return [
            (j, job_routes.get_job_result(j.id, ctx=ctx))
            for j in jobs
            if j.kind == "benchmark" and j.has_result
        ]

    @app.get("/console/results", include_in_schema=False)
    def results(request: Request) -> Response:  # sync: FastAPI runs it in the thread pool
        found = results_ctx(request)
        if isinstance(found, Response):
            return found
        p, ctx = found
        docs = benchmark_docs(ctx)
        table = _results_table(docs, show_tenant=p is not None and p.is_admin)
        return html("results", p=p, nav=_nav(p), title="Proving ground", table=table, num=len(docs))

    @app.get("/console/results/{job_id}", include_in_schema=False)
    def result_report(request: Request, job_id: int) -> Response:
        found = results_ctx(request)
        if isinstance(found, Response):
            return found
        p, ctx = found
        try:
            one = job_routes.get_job(job_id, ctx=ctx)
            if one.kind != "benchmark" or not one.has_result:
                raise NotFoundError("benchmark result", str(job_id))
            doc = job_routes.get_job_result(job_id, ctx=ctx)
        except NpuCenterError as exc:
            return fail(p, exc.http_status, exc.message, exc.hint)
        report = build_report([doc], names=[f"job {job_id}"], twin=True)
        return HTMLResponse(render_html(report), headers=_HEADERS)  # the bench report's page

    return sessions


_SIM_FIELDS = {
    "requests",
    "completed",
    "rejected",
    "goodput_rps",
    "slo_attainment",
    "energy_j_per_output_token",
    "mean_power_w",
    "simulated_s",
}
_SIM_PROGRESS = re.compile(r"simulated (\d+)/(\d+) requests")


def _examples_dir() -> Path:
    """The source tree's ``examples/`` (absent from an installed wheel: then none are offered)."""
    return Path(__file__).resolve().parents[3] / "examples"


def _twin_fleets(control: ControlPlane) -> dict[str, tuple[str, dict[str, Any]]]:
    """Fleets a simulation may run on: key -> (label, the fleet file's mapping).

    The center's own (``npucenter up --fleet``'s file, else the default fleet), then the shipped
    example fleets that use the shipped catalog. The form sends a key, never a path.
    """
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    path = control.settings.fleet_path
    own = _read_example(path) if path is not None else default_fleet_mapping()
    if isinstance(own, dict) and not own.get("catalog"):
        label = f"this center's fleet ({path.name if path is not None else 'the default fleet'})"
        out["center"] = (label, own)
    for file in sorted((_examples_dir() / "fleets").glob("*.yaml")):
        doc = _read_example(file)
        if isinstance(doc, dict) and doc.get("services") and not doc.get("catalog"):
            out[f"example:{file.stem}"] = (f"examples/fleets/{file.name}", doc)
    return out


def _read_example(path: Path) -> Any:
    """A shipped example's YAML document (None if unreadable), parsed once per version."""
    try:
        return copy.deepcopy(_parse_example(str(path), path.stat().st_mtime_ns))
    except OSError:
        return None


@functools.lru_cache(maxsize=64)
def _parse_example(path: str, mtime_ns: int) -> Any:
    del mtime_ns  # part of the cache key: an edited file is read again
    try:
        return read_fleet_file(path)  # YAML, with the fleet reader's errors
    except NpuCenterError:
        return None


def _twin_plans() -> dict[str, tuple[str, dict[str, Any]]]:
    """Plan specs a plan job may run: the shipped examples (key -> (label, mapping))."""
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for file in sorted((_examples_dir() / "plans").glob("*.yaml")):
        doc = _read_example(file)
        if isinstance(doc, dict):
            out[f"example:{file.stem}"] = (f"examples/plans/{file.name}", doc)
    return out


def _twin_job(form: dict[str, str], control: ControlPlane) -> JobIn:
    """The job a twin form asks for (validated again by the API as any submitted spec)."""
    kind = form.get("kind", "simulate")
    device = form.get("device_type", "").strip()
    if kind == "plan":
        plans = _twin_plans()
        key = form.get("plan", "")
        if key not in plans:
            raise NotFoundError("plan spec", key, valid=list(plans))
        label, doc = plans[key]
        spec: dict[str, Any] = {"plan": doc, "plan_label": label, "verify": "verify" in form}
        name = f"plan {doc.get('name', key.partition(':')[2])}"
    else:
        fleets = _twin_fleets(control)
        key = form.get("fleet", "")
        if key not in fleets:
            raise NotFoundError("fleet", key, valid=list(fleets))
        label, doc = fleets[key]
        trace = form.get("trace", "conv")
        if trace == "synthetic":
            trace = f"synthetic:{form.get('rate_rps', '').strip() or '10'}"
        spec = {
            "fleet": doc,
            "fleet_label": label,
            "trace": trace,
            "num_requests": _int(form.get("num_requests", "1000"), "num_requests"),
            "policy": form.get("policy", "least-outstanding-tokens"),
            "rate_scale": _float(form.get("rate_scale", "1") or "1", "rate_scale"),
        }
        name = f"simulate {doc.get('name', key)} {trace}"
    # 0: on the host's CPU, holding no card of the quota (policy/admission/host.py)
    cards = _int(form.get("num_cards", "0") or "0", "num_cards")
    fields = {"name": name[:128], "kind": kind, "device_type": device, "num_cards": cards}
    return JobIn.model_validate({**fields, "spec": spec})


def _int(text: str, field: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise InvalidConfigError(field, text, "must be an integer") from None


def _float(text: str, field: str) -> float:
    try:
        return float(text.strip())
    except ValueError:
        raise InvalidConfigError(field, text, "must be a number") from None


def _twin_progress(log_tail: str) -> dict[str, Any]:
    """How far a twin job is, from its log: ``done``/``total`` requests and the last line."""
    lines = [line for line in log_tail.splitlines() if line.strip()]
    found = _SIM_PROGRESS.findall(log_tail)
    done, total = (int(found[-1][0]), int(found[-1][1])) if found else (0, 0)
    return {"done": done, "total": total, "last": lines[-1] if lines else ""}


def _twin_report(kind: str, doc: dict[str, Any]) -> dict[str, Any]:
    """What the twin job page shows of a result: the simulate report's rows and charts
    (drawn by sim.report's own chart code from the stored quantiles), or the plan's table."""
    if kind == "plan":
        baselines = doc.get("baselines")
        if not isinstance(baselines, dict) or not all(
            isinstance(r, dict) for r in baselines.values()
        ):
            return {"kind": "other", "doc": doc, "charts": []}
        rows = [(str(n), _plan_row(r)) for n, r in [("plan", doc), *baselines.items()]]
        costs = [
            (name, float(r["cost_per_hour"]))
            for name, r in rows
            if isinstance(r.get("cost_per_hour"), int | float)
        ]
        chart = bar_chart(costs, unit="USD/h", title="Cost per hour: plan and baselines")
        comparison = doc.get("comparison")
        about = {
            "name": str(doc.get("name") or "—"),
            "objective": str(doc.get("objective") or "—"),
            "comparison": [str(c) for c in comparison] if isinstance(comparison, list) else [],
        }
        return {"kind": "plan", "rows": rows, "doc": about, "charts": [chart] if costs else []}
    s = doc.get("summary")
    cdf = doc.get("cdf")
    if (
        not isinstance(s, dict)
        or not isinstance(cdf, dict)
        or any(not isinstance(s.get(k), dict) for k in ("ttft_s", "tpot_s", "timeline"))
        or not _SIM_FIELDS.issubset(s)
    ):  # not a document the simulate program wrote (a result may be uploaded): shown as JSON
        return {"kind": "other", "doc": doc, "charts": []}
    try:
        charts = report_charts(
            s,
            np.asarray(cdf.get("ttft_s") or [], dtype=float),
            np.asarray(cdf.get("tpot_s") or [], dtype=float),
            np.asarray(cdf.get("e2e_s") or [], dtype=float),
        )
    except (AttributeError, KeyError, TypeError, ValueError):  # a timeline it cannot draw
        charts = []
    view = {k: s.get(k) for k in (*_SIM_FIELDS, "wall_s")}
    for k in ("ttft_s", "tpot_s"):
        view[k] = {q: s[k].get(q) for q in ("p50", "p90", "p99")}
    notes = s.get("assumptions")
    view["assumptions"] = [str(a) for a in notes] if isinstance(notes, list) else []
    about = {k: str(doc.get(k) or "—") for k in ("fleet_label", "trace", "policy", "trace_source")}
    return {"kind": "simulate", "s": view, "doc": about, "charts": charts}


def _plan_row(r: dict[str, Any]) -> dict[str, Any]:
    """One plan or baseline of ``npucenter plan --json``, with every field the page shows."""
    servers = r.get("servers")
    return {
        **{
            k: r.get(k)
            for k in (
                "npu_share",
                "power_w",
                "cost_per_hour",
                "cost_per_million_output_tokens",
                "energy_j_per_output_token",
            )
        },
        "feasible": bool(r.get("feasible")),
        "verified": bool(r.get("verified")),
        "found_by": str(r.get("found_by") or ""),
        "reason": str(r.get("reason") or ""),
        "servers": {str(d): n for d, n in servers.items()} if isinstance(servers, dict) else {},
    }


def _validation_text(exc: ValidationError) -> str:
    """A pydantic error as one line: ``field: message; ...`` (what the API's 422 says)."""
    return "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors())


def _device_choices(p: _Page) -> list[str]:
    """Device types to offer in a form: the caller's quotas' (a tenant deploys within them)."""
    quotas = quota_routes.list_quotas(ctx=p.ctx)
    return sorted({q.device_type for q in quotas})


def _cell(value: Any) -> Any:
    """A CSV cell a spreadsheet will not run: text starting with = + - @ gets a leading '."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _public_ctx(control: ControlPlane) -> RequestContext:
    """An admin context for the public proving-ground page (reads benchmark results only)."""
    return RequestContext(
        control=control, principal=Principal(key_id="public-results", tenant="", is_admin=True)
    )


def _set_cookie(
    response: Response, request: Request, name: str, value: str, *, max_age: int | None = None
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/console",
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )


def _nav(p: _Page | None) -> list[tuple[str, str]]:
    if p is None:
        return [("/console/results", "Proving ground")]
    items = [
        ("/console/usage", "Usage"),
        ("/console/quotas", "Quotas"),
        ("/console/keys", "Keys"),
        ("/console/deployments", "Deployments"),
        ("/console/jobs", "Jobs"),
        ("/console/data", "Data"),  # data sets and adapters (short: the header is one row)
        ("/console/twin", "Twin"),
        ("/console/fleet", "Fleet"),
        *([("/console/tenants", "Tenants")] if p.is_admin else []),
        ("/console/queue", "Queue"),
        ("/console/results", "Proving ground"),
    ]
    return items


def _usage_summary(
    ctx: RequestContext, *, by: str, kind: str | None = None, bucket_s: float | None = None
) -> list[UsageSummaryRow]:
    """``GET /api/usage/summary``: the ledger summed by the database, the caller's scope."""
    return usage_routes.usage_summary(
        tenant=None, kind=kind, since_s=None, by=by, bucket_s=bucket_s, ctx=ctx
    )


def _usage_table(groups: list[UsageSummaryRow]) -> list[dict[str, Any]]:
    return [
        {
            "tenant": g.tenant,
            "kind": g.kind,
            "model": g.model,
            "tokens_in": g.tokens_in,
            "tokens_out": g.tokens_out,
            "device_hours": g.device_seconds / 3600.0,
            "energy_kwh": g.energy_j / 3.6e6,
            "cost_usd": g.cost_usd or 0.0,
            "entries": g.num_entries,
        }
        for g in groups
    ]


def _sum_rows(table: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("tokens_in", "tokens_out", "device_hours", "energy_kwh", "cost_usd", "entries")
    return {k: sum(t[k] for t in table) for k in keys}


def _usage_chart(ctx: RequestContext, groups: list[UsageSummaryRow]) -> str:
    """Cumulative tokens (in + out) over time, one line per model, since the first request:
    the gateway's rows summed per model and time bucket (about ``_CHART_POINTS`` a line)."""
    tokens = [g for g in groups if g.kind == "tokens" and (g.tokens_in or g.tokens_out)]
    if not tokens:
        return line_chart([], title="Tokens over time", unit="tokens", empty_text="no tokens yet")
    t0 = min(g.first_at_s for g in tokens)
    span_s = max(g.last_at_s for g in tokens) - t0
    scale, unit_x = (1.0, "seconds") if span_s < 120 else (60.0, "minutes")
    buckets = _usage_summary(
        ctx, by="model", kind="tokens", bucket_s=max(span_s / _CHART_POINTS, 1e-3)
    )
    lines: dict[str, list[tuple[float, float | None]]] = defaultdict(list)
    totals: dict[str, float] = defaultdict(float)
    for b in sorted(buckets, key=lambda b: b.last_at_s):
        m = b.model or "—"
        if m not in lines:  # each line starts from nothing at its first request
            lines[m].append(((b.first_at_s - t0) / scale, 0.0))
        totals[m] += b.tokens_in + b.tokens_out
        lines[m].append(((b.last_at_s - t0) / scale, totals[m]))
    return line_chart(
        [Series(m, _thin(pts, _CHART_POINTS + 2)) for m, pts in sorted(lines.items())],
        title="Tokens over time (cumulative)",
        unit="tokens",
        x_label=f"{unit_x} since the first request",
        width=640,
        height=240,
        step=True,
    )


def _thin(points: list[tuple[float, float | None]], most: int) -> list[tuple[float, float | None]]:
    """At most ``most`` points of a cumulative line, evenly spaced, the last one kept."""
    if len(points) <= most:
        return points
    stride = -(-len(points) // most)
    return [*points[::stride][: most - 1], points[-1]]


def _reasons(p: _Page, rows: list[Any]) -> dict[int, str]:
    """Each job's latest reason from its history (why it is pending, or how it ended): the
    API's ``latest_reason``, loaded in one query for the whole list."""
    return {j.id: j.latest_reason for j in rows}


def _card_state(card: Any, health: str) -> str:
    if health != "healthy" or card.health != "healthy":
        return "unhealthy"
    if card.held_by is None:
        return "idle"
    return "job" if card.held_by.startswith("job:") else "serving"


def _power_now(app: FastAPI) -> dict[str, float] | None:
    """Each server's power now: its serving replicas' (the dashboard's figure), by server name.

    None without a live gateway (the control-plane app alone). Call on the gateway's loop.
    """
    gateway = getattr(app.state, "gateway", None)
    fleet = getattr(app.state, "fleet", None)
    if gateway is None or fleet is None:
        return None
    out: dict[str, float] = defaultdict(float)
    for row in replica_rows(gateway, fleet):
        if row["state"] != "not running":
            out[str(row["server"])] += float(row["power_w"])
    return dict(out)


def _card_tdp_w(device_type: str) -> float | None:
    """A card's TDP from the device catalog (sourced there), or None where it has none."""
    try:
        from npucenter.catalog import default_catalog

        return default_catalog().device(device_type).tdp_w
    except NpuCenterError:
        return None


def _server_view(s: Any, power: dict[str, float] | None = None) -> dict[str, Any]:
    cards = [
        {
            "index": c.index,
            "state": _card_state(c, s.health),
            "held_by": c.held_by or "",
            "tenant": c.tenant or "",
            "borrowed": c.borrowed,
        }
        for c in s.cards
    ]
    busy = sum(1 for c in cards if c["state"] in ("serving", "job"))
    tdp = _card_tdp_w(s.device_type)
    return {
        "power_w": None if power is None else power.get(s.name, 0.0),
        "tdp_w": None if tdp is None else tdp * len(cards),
        "name": s.name,
        "device": s.device_type,
        "kind": s.device_kind.upper(),
        "health": s.health,
        "cards": cards,
        "busy": busy,
        "share": busy / len(cards) if cards else 0.0,
    }


def _results_table(docs: list[tuple[Any, dict[str, Any]]], *, show_tenant: bool) -> dict[str, Any]:
    """Benchmark results side by side (bench.report's rows: one per run or suite scenario)."""
    if not docs:
        return {"rows": [], "chart": ""}
    names = [f"job {j.id}" + (f" ({j.tenant})" if show_tenant else "") for j, _ in docs]
    report = build_report([d for _, d in docs], names=names, twin=True)
    job_of = dict(zip(names, (j.id for j, _ in docs), strict=True))
    rows = []
    for r in sorted(report["rows"], key=lambda r: (r["scenario"], str(r["device"]), r["file"])):
        s = r["summary"]
        ttft, tpot = s.get("ttft_s") or {}, s.get("tpot_s") or {}
        twin = r.get("twin") or {}
        rows.append(
            {
                "job": job_of[r["file"]],
                "run": r["file"],
                "scenario": r["scenario"],
                "device": r["device"] or "—",
                "model": r["model"] or "—",
                "ttft": (_ms(ttft.get("p50")), _ms(ttft.get("p99"))),
                "tpot": (_ms(tpot.get("p50")), _ms(tpot.get("p99"))),
                "goodput": s.get("goodput_rps"),
                "slo": s.get("slo_attainment_fraction"),
                "tok_s": s.get("output_tokens_per_s"),
                "tok_j": s.get("output_tokens_per_j"),
                "usd_m": r.get("cost_usd_per_million_output_tokens"),
                "twin": _twin_text(twin),
            }
        )
    tput = [
        (f"{r['device']} · {r['run']}", float(r["tok_s"]))
        for r in rows
        if isinstance(r["tok_s"], int | float)
    ]
    chart = bar_chart(tput, unit="tok/s", title="Output tokens per second by run") if tput else ""
    return {"rows": rows, "chart": chart}


def _ms(v: Any) -> float | None:
    return float(v) * 1000.0 if isinstance(v, int | float) else None


def _twin_text(twin: dict[str, Any]) -> str:
    """The twin's saturation prediction beside the measurement, in words."""
    if not twin:
        return "—"
    if "error" in twin:
        return f"cannot predict: {twin['error']}"
    pred = (twin.get("prediction") or {}).get("saturation_rps")
    meas = (twin.get("measured") or {}).get("saturation_rps")
    if isinstance(pred, int | float) and isinstance(meas, int | float):
        return f"saturation {pred:,.3g} predicted / {meas:,.3g} measured req/s"
    return "—"
