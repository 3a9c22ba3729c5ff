"""Catalog: shipped figures, lookups, user overrides and their validation."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from npucenter.catalog import Precision, default_catalog
from npucenter.errors import InvalidConfigError, MissingFigureError, NotFoundError
from npucenter.files.catalog import load_catalog
from npucenter.perf import build_perf_model

SHARED = Path(__file__).resolve().parents[4] / "shared" / "data" / "devices.csv"


def test_required_devices_and_models_are_listed() -> None:
    cat = default_catalog()
    ids = {d.device_id for d in cat.devices}
    assert {
        "furiosa_rngd",
        "rebellions_atom",
        "nvidia_h100_sxm",
        "nvidia_h200_sxm",
        "nvidia_l40s",
        "nvidia_a100_80gb_sxm",
    } <= ids
    models = {m.model_id for m in cat.models}
    assert {
        "llama-2-7b",
        "llama-2-13b",
        "llama-2-70b",
        "llama-3.1-8b",
        "llama-3.1-70b",
        "llama-3.3-70b",
        "exaone-3.5-7.8b",
        "exaone-3.5-32b",
        "qwen2.5-7b",
        "qwen2.5-32b",
        "qwen2.5-72b",
    } <= models


def test_every_device_and_model_carries_a_source() -> None:
    cat = default_catalog()
    # a published figure has a URL; the host CPU's were measured here and say so
    for dev in cat.devices:
        assert dev.source_url.startswith(("http", "measured on this machine:")), dev.device_id
        if not dev.source_url.startswith("http"):
            assert "MEASURED ON THIS MACHINE" in dev.notes, dev.device_id
    for mod in cat.models:  # the tiny test model is built locally from its config
        assert mod.source_url.startswith(
            ("https://huggingface.co/", "npucenter model build-tiny")
        ), mod.model_id
    for row in cat.measurements:
        assert row.source_url.startswith("http")


def _figure_is_cited(value: float, notes: str) -> bool:
    """The notes quote the figure, as the source prints it (GB, GB/s or TB/s, W, TFLOPS)."""
    text = notes.replace(",", "").replace(" ", "")
    spellings = {f"{value:g}", f"{value / 1000:g}TB/s"}
    return any(s in text for s in spellings)


@pytest.mark.skipif(not SHARED.exists(), reason="shared data not beside the checkout")
def test_shipped_device_figures_equal_the_sourced_sheet() -> None:
    """Every figure is the shared sheet's, or was re-sourced: then the row cites another
    primary source than the sheet's and its notes quote the figure."""
    cat = default_catalog()
    refined: list[tuple[str, str]] = []
    with SHARED.open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            dev = cat.device(row["device_id"])
            for column, value in (
                ("memory_gb", dev.memory_gb),
                ("memory_bandwidth_gbps", dev.memory_bandwidth_gbps),
                ("bf16_tflops", dev.bf16_tflops),
                ("tdp_w", dev.tdp_w),
            ):
                expected = float(row[column]) if row[column] else None
                if value == expected:
                    continue
                assert value is not None, (
                    row["device_id"],
                    column,
                    "sheet has a figure we dropped",
                )
                assert dev.source_url.startswith("https://"), (row["device_id"], column)
                assert dev.source_url != row["source_url"], (row["device_id"], column)
                assert _figure_is_cited(value, dev.notes), (row["device_id"], column, value)
                refined.append((row["device_id"], column))
    # the re-sourced figures are few and named here so a new one is a deliberate change
    assert set(refined) <= {
        ("rebellions_rebel_quad", "memory_gb"),
        ("rebellions_rebel_quad", "memory_bandwidth_gbps"),
    }, refined


@pytest.mark.parametrize(
    ("model_id", "published_b"),
    [
        ("llama-3.1-8b", 8.03),
        ("llama-3.1-70b", 70.6),
        ("llama-2-7b", 6.74),
        ("qwen2.5-7b", 7.62),
        ("qwen2.5-72b", 72.7),
        ("exaone-3.5-32b", 32.0),
    ],
)
def test_parameter_counts_match_model_cards(model_id: str, published_b: float) -> None:
    params_b = default_catalog().model(model_id).num_params / 1e9
    assert params_b == pytest.approx(published_b, rel=0.02)


def test_aliases_and_case_insensitive_lookup() -> None:
    cat = default_catalog()
    assert cat.device("RNGD").device_id == "furiosa_rngd"
    assert cat.device("h100").device_id == "nvidia_h100_sxm"
    assert cat.model("meta-llama/Llama-3.1-8B-Instruct").model_id == "llama-3.1-8b"
    assert cat.model("LLaMA-7B").model_id == "llama-2-7b"


def test_unknown_ids_list_the_valid_ones() -> None:
    with pytest.raises(NotFoundError) as err:
        default_catalog().device("tpu-v9")
    assert "furiosa_rngd" in err.value.valid
    with pytest.raises(NotFoundError) as err:
        default_catalog().model("gpt-9")
    assert "llama-3.1-8b" in err.value.valid


def test_unsourced_atom_figures_fail_prediction_with_the_missing_fields() -> None:
    with pytest.raises(MissingFigureError) as err:
        build_perf_model(model="llama-3.1-8b", device="atom", precision="fp16")
    assert set(err.value.missing_fields) == {"memory_bandwidth_gbps", "tdp_w"}


def test_user_catalog_supplies_missing_figures_as_assumptions(tmp_path: Path) -> None:
    path = tmp_path / "atom.toml"
    path.write_text(
        '[[devices]]\nid = "atom"\nmemory_bandwidth_gbps = 256\ntdp_w = 130\n'
        'source = "lab measurement"\n',
        encoding="utf-8",
    )
    cat = load_catalog([path], include_user_dir=False)
    dev = cat.device("rebellions_atom")
    assert dev.memory_bandwidth_gbps == 256
    assert set(dev.assumed) == {"memory_bandwidth_gbps", "tdp_w"}
    pm = build_perf_model(cat, model="llama-3.1-8b", device="atom", precision="int4")
    notes = " ".join(pm.predict(128, 128, 1).assumptions)
    assert "memory_bandwidth_gbps" in notes and "lab measurement" in notes
    # the shipped catalog is untouched
    assert default_catalog().device("atom").memory_bandwidth_gbps is None


def test_user_catalog_adds_a_new_model_from_yaml(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(
        "models:\n  - id: tiny-1b\n    num_layers: 16\n    hidden_size: 2048\n"
        "    num_attention_heads: 32\n    num_kv_heads: 8\n    head_dim: 64\n"
        "    intermediate_size: 8192\n    vocab_size: 128256\n",
        encoding="utf-8",
    )
    cat = load_catalog([path], include_user_dir=False)
    assert cat.model("tiny-1b").num_layers == 16


@pytest.mark.parametrize(
    ("text", "field_part"),
    [
        ('[[devices]]\nid = "rngd"\nmemory_gbs = 3\n', "memory_gbs"),
        ('[[devices]]\nid = "rngd"\ntdp_w = -5\n', "tdp_w"),
        ('[[devices]]\nid = "new"\nvendor = "x"\nname = "y"\nkind = "fpga"\n', "kind"),
        ('[[models]]\nid = "m"\nnum_layers = 0\n', "model m"),
        ("[[widgets]]\nid = 1\n", "catalog section"),
    ],
)
def test_user_catalog_errors_name_the_field(tmp_path: Path, text: str, field_part: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InvalidConfigError) as err:
        load_catalog([path], include_user_dir=False)
    assert field_part in err.value.field or field_part in str(err.value.details)


def test_precision_parsing() -> None:
    assert Precision.parse("FP8") is Precision.FP8
    assert Precision.parse("w4a16") is Precision.INT4
    with pytest.raises(InvalidConfigError):
        Precision.parse("fp4")
