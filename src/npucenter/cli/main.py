"""Entry point of the `npucenter` command: one Typer app with a sub-app per face.

Each sub-app lives in its own module and is added here with one line.
"""

from __future__ import annotations

import typer

from npucenter import __version__

app = typer.Typer(
    name="npucenter",
    help="Run an AI inference computing center of NPUs and GPUs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"npucenter {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """npucenter: control plane, gateway, proving ground and digital twin."""


# --- sub-apps (one line each) -------------------------------------------------------------
from npucenter.cli import bench as _bench  # noqa: E402
from npucenter.cli import catalog as _catalog  # noqa: E402
from npucenter.cli import control as _control  # noqa: E402
from npucenter.cli import engine as _engine  # noqa: E402
from npucenter.cli import model as _model  # noqa: E402
from npucenter.cli import perf as _perf  # noqa: E402
from npucenter.cli import plan as _plan  # noqa: E402
from npucenter.cli import simulate as _simulate  # noqa: E402

app.add_typer(_bench.app, name="bench")
app.add_typer(_catalog.app, name="catalog")
app.add_typer(_engine.app, name="engine")
app.add_typer(_model.app, name="model")
app.add_typer(_perf.app, name="perf")
app.add_typer(_plan.app, name="plan")
app.add_typer(_simulate.app, name="simulate")
_control.install(app)  # tenant key quota fleet deploy job usage admission db up


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
