"""One request on the control-plane API and its answer as a table or JSON: the helpers every
command group of the CLI shares (control, artifacts), so no group imports another."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from npucenter.cli._common import console, print_json
from npucenter.cli.client import Client
from npucenter.settings import Settings

JSON_OPT = typer.Option(False, "--json", help="Print one JSON document on stdout.")

JOB_COLUMNS = [
    "id",
    "tenant",
    "name",
    "kind",
    "device_type",
    "num_cards",
    "priority_class",
    "state",
    "server",
    "borrowed_cards",
    "num_preemptions",
]


def _api() -> Client:
    return Client.from_settings(Settings.from_env())


def _call(method: str, path: str, body: Any = None, **params: Any) -> Any:
    """One request on a fresh client: GET takes query parameters, the others a JSON body."""
    with _api() as api:
        if method == "GET":
            return api.get(path, **params)
        if method == "DELETE":
            return api.delete(path)
        if method == "POST":
            return api.post(path, body)
        if method == "PUT":
            return api.put(path, body)
        return api.patch(path, body)


def _table(
    json_out: bool,
    columns: Sequence[str],
    method: str,
    path: str,
    body: Any = None,
    *,
    title: str = "",
    **params: Any,
) -> None:
    """The common command: one request, its answer as a table (or ``--json``)."""
    _show(_call(method, path, body, **params), json_out, columns, title)


def _delete(json_out: bool, path: str, verb: str, ref: Any) -> None:
    """DELETE ``path``, then print ``{verb: ref}`` (the API answers 204 with no body)."""
    _call("DELETE", path)
    _show({verb: ref}, json_out, [verb])


def _show(
    doc: Any,
    json_out: bool,
    columns: Sequence[str],
    title: str = "",
    fmt: dict[str, Callable[[Any], str]] | None = None,
) -> None:
    if json_out:
        print_json(doc)
        return
    rows = doc if isinstance(doc, list) else [doc]
    table = Table(title=title or None, show_lines=False)
    for col in columns:
        table.add_column(col, overflow="fold")
    fmt = fmt or {}
    for row in rows:
        table.add_row(*(escape(fmt.get(c, _cell)(row.get(c))) for c in columns))
    console.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)
