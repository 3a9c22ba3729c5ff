"""`npucenter model build-tiny DIR`: the tiny test model for real engines (no download)."""

from __future__ import annotations

from pathlib import Path

import typer

from npucenter.cli._common import console, handle_errors, print_json

__all__ = ["app"]

app = typer.Typer(help="Models the center serves from local directories.", no_args_is_help=True)


@app.command("build-tiny")
@handle_errors
def build_tiny(
    directory: Path = typer.Argument(..., help="Directory to build into (created)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random weights."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty directory."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Build the tiny Llama (2 layers, hidden 256, vocab 512, random weights) into DIRECTORY.

    Needs the engine extra (pip install 'npucenter[engine]'); downloads nothing. Serve it with
    `npucenter engine command -m tiny-llama -d cpu -e vllm --model-path DIRECTORY`.
    """
    from npucenter.engines.tiny import TINY_MODEL_ID, build_tiny_model

    path = build_tiny_model(directory, seed=seed, overwrite=overwrite)
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    if json_out:
        print_json({"model": TINY_MODEL_ID, "path": str(path), "seed": seed, "bytes": size})
        return
    console.print(f"{TINY_MODEL_ID} built in {path} ({size / 1e6:.2f} MB, seed {seed})")
