"""`npucenter db upgrade|current|admin-key`: migrations, and a local way back to an admin key."""

from __future__ import annotations

from pathlib import Path

import typer

from npucenter.cli._common import console, handle_errors, print_json
from npucenter.settings import Settings

__all__ = ["app"]

app = typer.Typer(help="Database migrations of the control plane.", no_args_is_help=True)

DATA_DIR_OPT = typer.Option(None, "--data-dir", help="Data directory (SQLite lives there).")


@app.command("upgrade")
@handle_errors
def db_upgrade(
    data_dir: Path | None = DATA_DIR_OPT,
    revision: str = typer.Option("head", "--revision"),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Apply migrations to NPUCENTER_DATABASE_URL (default: SQLite in the data directory)."""
    from npucenter.store import current_revision, upgrade  # sqlalchemy loads only when needed

    settings = Settings.from_env(data_dir=data_dir)
    if settings.is_sqlite:
        settings.ensure_data_dir()
    before = current_revision(settings.database_url)
    after = upgrade(settings.database_url, revision)
    doc = {"database": _safe(settings.database_url), "from": before, "to": after}
    if json_out:
        print_json(doc)
    else:
        console.print(f"{doc['database']}: {before or 'empty'} -> {after}", highlight=False)


@app.command("current")
@handle_errors
def db_current(
    data_dir: Path | None = DATA_DIR_OPT,
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Show the database's revision and the newest one."""
    from npucenter.store import current_revision, heads

    settings = Settings.from_env(data_dir=data_dir)
    doc = {
        "database": _safe(settings.database_url),
        "current": current_revision(settings.database_url),
        "head": heads(),
    }
    if json_out:
        print_json(doc)
    else:
        console.print(
            f"{doc['database']}: {doc['current'] or 'empty'} (head {doc['head']})", highlight=False
        )


@app.command("admin-key")
@handle_errors
def db_admin_key(
    data_dir: Path | None = DATA_DIR_OPT,
    name: str = typer.Option("recovered", "--name", help="A name for the new key."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Create an admin key directly in the database (recovery: no server or key needed).

    Run it where the database is (the data directory, or with NPUCENTER_DATABASE_URL): whoever
    can write the database is the operator. The key is printed once.
    """
    import time

    from npucenter.store import Database, upgrade
    from npucenter.store.repository import Repository

    settings = Settings.from_env(data_dir=data_dir)
    upgrade(settings.database_url)
    db = Database(settings.database_url)
    try:
        with db.session() as session:
            key, secret = Repository(session, time.time).create_key(
                tenant_id=None, scope="admin", name=name
            )
            doc = {"id": key.id, "short_id": key.short_id, "scope": "admin", "key": secret}
    finally:
        db.dispose()
    if json_out:
        print_json(doc)
    else:
        console.print(f"admin key {doc['id']} ({doc['short_id']}): {secret}", highlight=False)
        console.print("store it now: it cannot be shown again", style="yellow")


def _safe(url: str) -> str:
    """The URL without its password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}@{host}"
    return url
