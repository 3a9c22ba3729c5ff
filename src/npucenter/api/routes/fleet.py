"""The fleet: servers and their cards (admins write; every caller may read)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, status

from npucenter.api.admission import admit_after_change
from npucenter.api.context import RequestContext, admin_context, caller_context
from npucenter.api.schemas import HealthIn, ServerIn, ServerOut
from npucenter.api.views import server_out, tenant_names

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["fleet"])


@router.post("/servers", response_model=ServerOut, status_code=status.HTTP_201_CREATED)
def create_server(body: ServerIn, ctx: RequestContext = Depends(admin_context)) -> ServerOut:
    """Register a server (admin); pending workloads are admitted onto it."""
    with ctx.tx() as repo:
        server_id = repo.create_server(body.name, body.device_type, body.num_cards, body.labels).id
    admit_after_change(ctx.control)
    with ctx.tx() as repo:
        return server_out(repo, repo.get_server(server_id))


@router.get("/servers", response_model=list[ServerOut])
def list_servers(ctx: RequestContext = Depends(caller_context)) -> list[ServerOut]:
    """Every server with its cards."""
    with ctx.tx() as repo:
        allocs = {a.card_id: a for a in repo.allocations()}
        names = tenant_names(repo)
        if not ctx.is_admin:  # tenants see which cards are taken, not by whom
            names = {k: v for k, v in names.items() if k == ctx.scope}
        return [server_out(repo, s, allocs, names) for s in repo.list_servers()]


@router.get("/servers/{ref}", response_model=ServerOut)
def get_server(ref: str, ctx: RequestContext = Depends(caller_context)) -> ServerOut:
    """A server by id or name."""
    with ctx.tx() as repo:
        return server_out(repo, repo.get_server(ref))


@router.patch("/servers/{ref}", response_model=ServerOut)
def set_health(ref: str, body: HealthIn, ctx: RequestContext = Depends(admin_context)) -> ServerOut:
    """Set the health of a server or one card (admin)."""
    with ctx.tx() as repo:
        server = repo.set_health(repo.get_server(ref), body.health, body.card_index)
        server_id = server.id
    admit_after_change(ctx.control)
    with ctx.tx() as repo:
        return server_out(repo, repo.get_server(server_id))


@router.delete("/servers/{ref}", status_code=status.HTTP_204_NO_CONTENT)
def delete_server(ref: str, ctx: RequestContext = Depends(admin_context)) -> None:
    """Remove a server that holds no workload (admin)."""
    with ctx.tx() as repo:
        repo.delete_server(repo.get_server(ref))
