"""`npucenter engine command|devices` (the sub-app, driven with Typer's runner)."""

from __future__ import annotations

import json
import sys

import pytest
from typer.testing import CliRunner

from npucenter.cli.engine import app

runner = CliRunner()


def test_command_auto_picks_furiosa_for_rngd() -> None:
    result = runner.invoke(
        app,
        ["command", "-m", "llama-3.1-8b", "-d", "rngd", "--tp", "2", "--cards", "4,5", "--json"],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["engine"] == "furiosa-llm"
    assert doc["argv"][doc["argv"].index("--devices") + 1] == "npu:4,npu:5"
    assert doc["ray_resources"] == {"FURIOSA": 2.0}


def test_command_text_for_vllm() -> None:
    result = runner.invoke(app, ["command", "-m", "m", "-d", "h100", "--tp", "2", "--port", "9000"])
    assert result.exit_code == 0
    assert "CUDA_VISIBLE_DEVICES=0,1 vllm serve m" in result.output
    assert "--tensor-parallel-size 2" in result.output


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["command", "-m", "m", "-d", "atom"], 2),  # vllm-rbln needs --max-model-len
        (["command", "-m", "m", "-d", "h100", "--cards", "a,b"], 2),
        (["command", "-m", "m", "-d", "h100", "-e", "tgi"], 3),
        (["command", "-m", "m", "-d", "rngd", "-e", "vllm"], 8),
    ],
)
def test_bad_input_exits_with_the_error_code(args: list[str], code: int) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == code


def test_devices_on_a_node_without_cards(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setitem(sys.modules, "pynvml", None)
    result = runner.invoke(app, ["devices", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.output) == []
