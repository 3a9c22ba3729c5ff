"""The tiny test model: a 2-layer Llama with random weights and a locally trained BPE tokenizer.

Built from a config with ``transformers`` and ``tokenizers`` (the ``[engine]`` extra), with no
download: the tokenizer is trained on text shipped in the package and the chat template is set
by hand. Real engines (vLLM's CPU build) serve it in tests, demos and CI; its shape is the
catalog's ``tiny-llama`` row. Heavy imports happen inside :func:`build_tiny_model` only.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from importlib.resources import files
from pathlib import Path
from typing import Any

from npucenter.errors import InvalidConfigError, NotSupportedError

__all__ = [
    "TINY_CHAT_TEMPLATE",
    "TINY_CONFIG",
    "TINY_MODEL_ID",
    "build_tiny_model",
    "ensure_tiny_model",
    "is_model_dir",
]

TINY_MODEL_ID = "tiny-llama"

#: The Llama config (transformers' ``LlamaConfig`` keywords). head_dim 64: vLLM's CPU attention
#: refuses 16 (hidden 256 / 4 heads would give 64 anyway; stated so a change keeps it).
TINY_CONFIG: dict[str, Any] = {
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "vocab_size": 512,
    "max_position_embeddings": 1024,
    "tie_word_embeddings": False,
    "rms_norm_eps": 1e-5,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
}

_SPECIALS = ("<pad>", "<s>", "</s>")  # ids 0, 1, 2 (the config's pad/bos/eos)

#: A ChatML-like template set by hand (the tokenizer has no hub template to copy).
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '</s>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def is_model_dir(path: str | Path) -> bool:
    """Whether ``path`` holds a saved checkpoint (a ``config.json`` and a tokenizer)."""
    p = Path(path)
    return (p / "config.json").is_file() and (p / "tokenizer.json").is_file()


def build_tiny_model(directory: str | Path, *, seed: int = 0, overwrite: bool = False) -> Path:
    """Build the tiny model into ``directory`` (created; atomically replaced when complete).

    Raises:
        NotSupportedError: ``transformers``/``tokenizers``/``torch`` are not installed.
        InvalidConfigError: ``directory`` exists and is not empty (without ``overwrite``).
    """
    target = Path(directory).expanduser().resolve()
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise InvalidConfigError(
            "directory", str(target), "exists and is not empty", hint="pass --overwrite"
        )
    torch, transformers, tokenizers = _heavy_imports()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-", dir=target.parent))
    staging.chmod(0o755)
    try:
        tokenizer = _train_tokenizer(tokenizers, transformers)
        torch.manual_seed(seed)
        config = transformers.LlamaConfig(**TINY_CONFIG)
        model = transformers.LlamaForCausalLM(config).to(torch.bfloat16)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / "npucenter-model.json").write_text(
            json.dumps(
                {
                    "model_id": TINY_MODEL_ID,
                    "seed": seed,
                    "built_by": "npucenter model build-tiny",
                    "weights": "random (torch.manual_seed)",
                    "tokenizer": "byte-level BPE trained on npucenter/engines/data/tiny_corpus.txt",
                },
                indent=2,
            )
            + "\n"
        )
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def ensure_tiny_model(directory: str | Path, *, seed: int = 0) -> Path:
    """``directory`` when it already holds a model, else the tiny model built there."""
    path = Path(directory).expanduser()
    if is_model_dir(path):
        return path
    return build_tiny_model(path, seed=seed, overwrite=True)


def _ascii_alphabet() -> list[str]:
    """Byte-level symbols of tab, newline and printable ASCII (GPT-2's byte-to-unicode map).

    NOTE(engines): an ASCII-only alphabet, and a corpus that fills all 512 ids with merges, make
    every token the random model samples decode to text: with the 256-byte alphabet a quarter of
    the ids were lone non-ASCII bytes and a fifth were beyond the tokenizer's vocabulary, so
    streams were mostly empty deltas. Characters outside ASCII in a prompt are dropped.
    """
    printable = list(range(ord("!"), ord("~") + 1))
    shifted = {b: 256 + i for i, b in enumerate(b for b in range(256) if b not in _GPT2_DIRECT)}
    return [chr(b) for b in printable] + [chr(shifted[b]) for b in (9, 10, 32)]


_GPT2_DIRECT = frozenset(
    [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
)


def _heavy_imports() -> tuple[Any, Any, Any]:
    try:
        import tokenizers
        import torch
        import transformers
    except ImportError as exc:
        raise NotSupportedError(
            "building the tiny model",
            f"{exc.name} is not installed",
            hint="pip install 'npucenter[engine]' (transformers, tokenizers, torch)",
        ) from exc
    return torch, transformers, tokenizers


def _train_tokenizer(tokenizers: Any, transformers: Any) -> Any:
    text = files("npucenter.engines").joinpath("data/tiny_corpus.txt").read_text()
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=int(TINY_CONFIG["vocab_size"]),
        special_tokens=list(_SPECIALS),
        initial_alphabet=_ascii_alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(lines, trainer=trainer)
    if tok.get_vocab_size() != TINY_CONFIG["vocab_size"]:  # the corpus must give every merge
        raise InvalidConfigError(
            "tiny tokenizer", tok.get_vocab_size(), f"must have {TINY_CONFIG['vocab_size']} tokens"
        )
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        model_max_length=int(TINY_CONFIG["max_position_embeddings"]),
    )
    fast.chat_template = TINY_CHAT_TEMPLATE
    return fast
