"""`npucenter engine command|devices`: the exact launch of a replica, and this node's cards."""

from __future__ import annotations

import asyncio
from dataclasses import asdict

import typer
from rich.markup import escape
from rich.table import Table

from npucenter.cli._common import console, handle_errors, print_json
from npucenter.engines import ENGINES, ReplicaSpec, default_engine_for_device, launch_spec
from npucenter.errors import InvalidConfigError

__all__ = ["app"]

app = typer.Typer(
    help="Engine launch commands and device discovery (vLLM, furiosa-llm, vllm-rbln)."
)


@app.command("command")
@handle_errors
def command(
    model: str = typer.Option(
        ..., "--model", "-m", help="Model id (or any name the engine knows)."
    ),
    device: str = typer.Option(..., "--device", "-d", help="Device id or alias, e.g. rngd, h100."),
    engine: str = typer.Option(
        "auto", "--engine", "-e", help=f"auto or one of: {', '.join(ENGINES.names())}."
    ),
    tp: int = typer.Option(1, "--tp", help="Cards per replica."),
    cards: str | None = typer.Option(
        None, "--cards", help="Card indices, e.g. 0,1 (default 0..tp-1)."
    ),
    precision: str | None = typer.Option(None, "--precision", help="e.g. fp8, bf16."),
    model_path: str | None = typer.Option(
        None, "--model-path", help="HF id, checkpoint or compiled artifact (default: --model)."
    ),
    served_model_name: str | None = typer.Option(None, "--served-model-name"),
    max_num_seqs: int | None = typer.Option(None, "--max-num-seqs"),
    max_model_len: int | None = typer.Option(None, "--max-model-len"),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Print the exact command, environment and health check that launch one replica."""
    spec = ReplicaSpec(
        engine=default_engine_for_device(device) if engine == "auto" else engine,
        model=model,
        device=device,
        tp=tp,
        precision=precision,
        device_indices=_cards(cards),
        model_path=model_path,
        served_model_name=served_model_name,
        max_num_seqs=max_num_seqs,
        max_model_len=max_model_len,
    )
    launch = launch_spec(spec, host=host, port=port)
    if json_out:
        print_json(
            {
                "engine": launch.engine,
                "argv": list(launch.argv),
                "env": launch.env_dict(),
                "health_url": launch.health_url,
                "ready_timeout_s": launch.ready_timeout_s,
                "ray_resources": dict(launch.resources),
                "shell": launch.shell(),
            }
        )
        return
    console.print(
        f"# {launch.engine}; ready when GET {launch.health_url} answers 200", highlight=False
    )
    console.print(escape(launch.shell()), highlight=False, soft_wrap=True)


@app.command("devices")
@handle_errors
def devices(
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """List this node's accelerator cards (NVML, furiosa-smi, rbln-smi; those installed)."""
    from npucenter.telemetry import discover_cards

    found = asyncio.run(discover_cards())
    if json_out:
        print_json([asdict(c) for c in found])
        return
    if not found:
        console.print("no accelerator cards found (NVML, furiosa-smi and rbln-smi looked)")
        return
    table = Table("type", "index", "name", "memory GB", "power W", "temp °C", "source")
    for c in found:
        table.add_row(
            c.device_type,
            str(c.index),
            escape(c.name),
            _fmt(c.memory_gb),
            _fmt(c.power_w),
            _fmt(c.temperature_c),
            c.source,
        )
    console.print(table)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _cards(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise InvalidConfigError(
            "cards", text, "must be comma-separated integers, e.g. 0,1"
        ) from None
