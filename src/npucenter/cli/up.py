"""`npucenter up`: start the control-plane server (uvicorn) with migrations applied.

The admin key: NPUCENTER_ADMIN_KEY at first start, else a generated one printed once here.
Server extensions registered in ``npucenter.api.app.SERVER_EXTENSIONS`` (gateway, dashboard,
fleet registration and deployment reconciler, job runner) are added to the same app.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import typer

from npucenter.cli._common import console, err_console, handle_errors
from npucenter.settings import Settings

__all__ = ["up"]


@handle_errors
def up(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", help="Port to listen on."),
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help="Data directory (SQLite, state)."
    ),
    log_level: str = typer.Option("info", "--log-level"),
    fleet: Path | None = typer.Option(
        None,
        "--fleet",
        help="Fleet YAML, the format `simulate --fleet` reads (default: 2 RNGD + 1 H100 servers).",
    ),
    executor: str | None = typer.Option(
        None,
        "--executor",
        help="Where replicas run: local (child processes, default) or ray (NPUCENTER_EXECUTOR).",
    ),
    ray_address: str | None = typer.Option(
        None,
        "--ray-address",
        help="The Ray cluster for --executor ray, e.g. 127.0.0.1:6379 (NPUCENTER_RAY_ADDRESS).",
    ),
) -> None:
    """Start the center: control-plane API, OpenAI gateway, dashboard and a virtual fleet.

    One process on one port: the API at /api, the gateway at /v1, Prometheus metrics at
    /metrics and the dashboard at /. Migrations are applied at start; the fleet's servers and
    services are registered in the store (with no --fleet: two RNGD servers and one H100 server
    serving llama-3.1-8b), and every admitted deployment replica runs as a virtual engine.
    """
    import uvicorn

    from npucenter.api.app import build_server_app

    settings = Settings.from_env(data_dir=data_dir)
    if fleet is not None:  # the gateway extension's fleet, and the tariff when none is set
        settings = replace(settings, fleet_path=fleet)
    if executor is not None or ray_address is not None:
        settings = replace(
            settings,
            executor=(executor or ("ray" if ray_address else settings.executor)).lower(),
            ray_address=ray_address or settings.ray_address,
        )
    _check_port_free(host, port)  # before migrations and engines, not as uvicorn's raw errno
    from npucenter.live.leader import hold_center_lock

    center_lock = hold_center_lock(settings)  # SQLite: one process; PostgreSQL: several
    app = build_server_app(settings)
    generated = app.state.generated_admin_key
    if generated:
        console.print(
            f"admin key (shown once, store it now): {generated}", highlight=False, soft_wrap=True
        )
    if host not in ("127.0.0.1", "localhost", "::1"):
        err_console.print(f"warning: listening on {host}: anyone who can reach it may try keys")
    base = f"http://{host}:{port}"
    console.print(
        f"npucenter on {base} (data: {settings.data_dir})\n"
        f"  gateway    {base}/v1   (OpenAI-compatible; Authorization: Bearer <key>)\n"
        f"  API        {base}/api  (control plane; npucenter tenant|key|quota|fleet|deploy|job|usage)\n"
        f"  dashboard  {base}/\n"
        f"  metrics    {base}/metrics\n"
        f"  replicas   {_where(settings)}\n"
        "  deployments' replicas start in the background; /v1 answers 503 with Retry-After until"
        " ready",
        highlight=False,
    )
    uvicorn.run(app, host=host, port=port, log_level=log_level)
    if center_lock is not None:
        center_lock.close()


def _check_port_free(host: str, port: int) -> None:
    import errno
    import socket

    from npucenter.errors import ConflictError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise ConflictError(
                f"port {port} on {host} is in use (another `npucenter up`?)",
                hint=f"stop it, or pick another port: npucenter up --port {port + 1}",
            ) from None


def _where(settings: Settings) -> str:
    if settings.executor == "ray":
        return f"Ray actors on the cluster at {settings.ray_address or 'auto'}"
    return f"local processes on {settings.engine_host or '127.0.0.1'}"
