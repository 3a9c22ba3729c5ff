"""A model's own tokenizer as the gateway's pre-admission token count (``tokenizers``).

Where a real engine serves a local model directory with a ``tokenizer.json``, the gateway counts
a request's prompt tokens the way the engine will: chat messages rendered with the model's chat
template (Jinja, sandboxed), then encoded; a completions prompt encoded as it is (token ids are
counted as given). Budgets are then reserved on real token counts, not on characters / 4.
Without the ``tokenizers`` library or a tokenizer file there is no counter (the gateway keeps its
own estimate).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["TokenizerCounter", "tokenizer_counter"]

log = logging.getLogger(__name__)


class TokenizerCounter:
    """Counts a request's prompt tokens with a model directory's tokenizer and chat template."""

    def __init__(self, tokenizer: Any, chat_template: str | None, specials: Mapping[str, str]):
        self._tokenizer = tokenizer
        self._specials = dict(specials)
        self._template = None
        if chat_template:
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
            self._template = env.from_string(chat_template)

    def count_text(self, text: str) -> int:
        """Tokens of ``text`` as the engine encodes a prompt."""
        return len(self._tokenizer.encode(text).ids)

    def __call__(self, request: Mapping[str, Any], endpoint: str) -> int | None:
        """Prompt tokens of an OpenAI request (None: a shape this counter does not know)."""
        if endpoint.endswith("/chat/completions"):
            messages = request.get("messages")
            if self._template is None or not isinstance(messages, list):
                return None
            rendered = self._template.render(
                messages=[_flat(m) for m in messages if isinstance(m, Mapping)],
                add_generation_prompt=True,
                **self._specials,
            )
            return self.count_text(rendered)
        prompt = request.get("prompt")
        if isinstance(prompt, str):
            return self.count_text(prompt)
        if isinstance(prompt, list) and all(isinstance(p, int) for p in prompt):
            return len(prompt)
        if isinstance(prompt, list):
            return sum(
                self.count_text(p) if isinstance(p, str) else len(p) if isinstance(p, list) else 0
                for p in prompt
            )
        return None


def tokenizer_counter(model_dir: str | Path | None) -> TokenizerCounter | None:
    """The counter of a local model directory; None without ``tokenizers`` or a tokenizer file."""
    if model_dir is None:
        return None
    path = Path(model_dir)
    if not (path / "tokenizer.json").is_file():
        return None
    try:
        from tokenizers import Tokenizer
    except ImportError:
        return None
    config: dict[str, Any] = {}
    if (path / "tokenizer_config.json").is_file():
        config = json.loads((path / "tokenizer_config.json").read_text())
    template = config.get("chat_template")
    if not isinstance(template, str) and (path / "chat_template.jinja").is_file():
        template = (path / "chat_template.jinja").read_text()
    specials = {
        k: str(config[k]) for k in ("bos_token", "eos_token") if isinstance(config.get(k), str)
    }
    try:
        tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    except Exception as exc:  # a malformed file: keep the gateway's own estimate
        log.warning("tokenizer of %s not usable: %s", path, exc)
        return None
    return TokenizerCounter(tokenizer, template if isinstance(template, str) else None, specials)


def _flat(message: Mapping[str, Any]) -> dict[str, Any]:
    """A message whose content is text (the text parts of a list joined)."""
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, Mapping) and p.get("type") == "text"
        )
    return {**message, "content": "" if content is None else content}
