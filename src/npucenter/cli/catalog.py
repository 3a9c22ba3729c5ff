"""`npucenter catalog devices|models`: what the center knows, with sources."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from npucenter.cli._common import console, handle_errors, print_json
from npucenter.files.catalog import load_catalog

app = typer.Typer(help="Devices and models known to npucenter, each figure with its source.")

CatalogOpt = typer.Option(
    None, "--catalog", help="User catalog file (TOML/YAML) adding or overriding entries."
)
JsonOpt = typer.Option(False, "--json", help="Print one JSON document.")


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:g}"


@app.command("devices")
@handle_errors
def devices(
    json_out: bool = JsonOpt,
    catalog: list[Path] | None = CatalogOpt,
) -> None:
    """List accelerators: memory, bandwidth, peak rates, TDP; '—' = no sourced figure."""
    cat = load_catalog(catalog or [])
    if json_out:
        print_json(
            [
                {
                    "device_id": d.device_id,
                    "aliases": list(d.aliases),
                    "vendor": d.vendor,
                    "name": d.name,
                    "kind": d.kind,
                    **{f: getattr(d, f) for f in d.numeric_fields},
                    "cards_per_server": d.cards_per_server,
                    "precisions": [p.value for p in d.precisions],
                    "source_url": d.source_url,
                    "assumed": list(d.assumed),
                }
                for d in cat.devices
            ]
        )
        return
    table = Table(title="Devices (— = no sourced figure; * = user-supplied assumption)")
    for col in ("id", "kind", "memory GB", "BW GB/s", "BF16 TF", "FP8 TF", "INT8 TOPS", "TDP W"):
        table.add_column(col, justify="right" if col not in ("id", "kind") else "left")
    table.add_column("precisions")
    for d in cat.devices:
        star = "*" if d.assumed else ""
        table.add_row(
            f"{d.device_id}{star} ({', '.join(d.aliases)})" if d.aliases else d.device_id + star,
            d.kind,
            _fmt(d.memory_gb),
            _fmt(d.memory_bandwidth_gbps),
            _fmt(d.bf16_tflops),
            _fmt(d.fp8_tflops),
            _fmt(d.int8_tops),
            _fmt(d.tdp_w),
            ",".join(p.value for p in d.precisions),
        )
    console.print(table)
    console.print("Sources: `npucenter catalog devices --json` lists each row's source_url.")


@app.command("models")
@handle_errors
def models(
    json_out: bool = JsonOpt,
    catalog: list[Path] | None = CatalogOpt,
) -> None:
    """List model architectures (from their published config.json)."""
    cat = load_catalog(catalog or [])
    if json_out:
        print_json(
            [
                {
                    "model_id": m.model_id,
                    "name": m.name,
                    "aliases": list(m.aliases),
                    "num_params": m.num_params,
                    "num_layers": m.num_layers,
                    "hidden_size": m.hidden_size,
                    "num_attention_heads": m.num_attention_heads,
                    "num_kv_heads": m.num_kv_heads,
                    "head_dim": m.head_dim,
                    "intermediate_size": m.intermediate_size,
                    "vocab_size": m.vocab_size,
                    "max_context_tokens": m.max_context_tokens,
                    "source_url": m.source_url,
                }
                for m in cat.models
            ]
        )
        return
    table = Table(title="Models")
    for col in ("id", "params B", "layers", "hidden", "heads", "KV heads", "FFN", "vocab", "ctx"):
        table.add_column(col, justify="left" if col == "id" else "right")
    for m in cat.models:
        table.add_row(
            m.model_id,
            f"{m.num_params / 1e9:.2f}",
            str(m.num_layers),
            str(m.hidden_size),
            str(m.num_attention_heads),
            str(m.num_kv_heads),
            str(m.intermediate_size),
            str(m.vocab_size),
            str(m.max_context_tokens),
        )
    console.print(table)
