"""The tiny test model: built from its config with no download, deterministic, servable shape.

Needs the engine extra (transformers, tokenizers, torch); skipped without it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from npucenter.catalog import default_catalog
from npucenter.engines.models import ensure_model, resolve_model_path
from npucenter.engines.tiny import TINY_CONFIG, TINY_MODEL_ID, build_tiny_model, is_model_dir
from npucenter.errors import InvalidConfigError

pytest.importorskip("transformers", reason="the engine extra (pip install 'npucenter[engine]')")
pytest.importorskip("tokenizers", reason="the engine extra (pip install 'npucenter[engine]')")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("models") / TINY_MODEL_ID, seed=0)


def test_the_build_is_a_llama_of_the_catalogs_shape(tiny: Path) -> None:
    assert is_model_dir(tiny)
    config = json.loads((tiny / "config.json").read_text())
    assert config["model_type"] == "llama"
    row = default_catalog().model(TINY_MODEL_ID)
    assert (config["hidden_size"], config["num_hidden_layers"]) == (row.hidden_size, row.num_layers)
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (
        row.num_attention_heads,
        row.num_kv_heads,
    )
    assert config["head_dim"] == row.head_dim == 64  # vLLM's CPU attention refuses 16
    assert config["vocab_size"] == row.vocab_size == TINY_CONFIG["vocab_size"]
    assert config["intermediate_size"] == row.intermediate_size


def test_the_tokenizer_is_trained_here_and_has_a_chat_template(tiny: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny)
    text = "The gateway routes requests on the NPU cards."
    ids = tok(text)["input_ids"]
    assert max(ids) < TINY_CONFIG["vocab_size"] and len(ids) < len(text)  # merges were learnt
    assert tok.decode(ids) == text
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert chat == "<|user|>\nhi</s>\n<|assistant|>\n"
    assert tok.eos_token_id == TINY_CONFIG["eos_token_id"]


def test_the_same_seed_builds_the_same_weights_and_another_does_not(
    tiny: Path, tmp_path: Path
) -> None:
    def digest(path: Path) -> str:
        return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()

    assert digest(build_tiny_model(tmp_path / "again", seed=0)) == digest(tiny)
    assert digest(build_tiny_model(tmp_path / "other", seed=1)) != digest(tiny)


def test_a_non_empty_directory_is_not_overwritten_without_asking(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(InvalidConfigError):
        build_tiny_model(tmp_path)
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_models_dir_resolution_and_build_on_first_use(tmp_path: Path) -> None:
    models = tmp_path / "models"
    path = resolve_model_path(TINY_MODEL_ID, None, models)
    assert path == str(models / TINY_MODEL_ID)  # buildable: placed under the models dir
    assert ensure_model(TINY_MODEL_ID, path) and is_model_dir(models / TINY_MODEL_ID)
    assert not ensure_model(TINY_MODEL_ID, path)  # there now: not built again
    assert resolve_model_path("llama-3.1-8b", None, models) is None  # neither there nor buildable
    assert resolve_model_path("x", "org/name", models) == "org/name"  # a hub id
    assert resolve_model_path("x", "/abs/dir", models) == "/abs/dir"
