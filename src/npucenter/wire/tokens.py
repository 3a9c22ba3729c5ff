"""Token counting and synthetic text: one rule for the virtual engine, the fakes and the gateway.

NOTE(wire): a prompt's token count approximates a BPE tokenizer on English text: every run
of word characters counts ``ceil(len / 4)`` tokens (short words are one token, long words split
about every four characters), every other non-space character counts one token. A list of
token ids counts its length exactly, so benchmarks that send token ids get exact counts. Chat
messages add OpenAI's published overhead: 3 tokens per message and 3 to prime the reply.
Generated text is one word per token, so counting the output with the same rule gives back the
completion token count.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

from npucenter.errors import InvalidRequestError

__all__ = [
    "TOKENS_PER_MESSAGE",
    "TOKENS_REPLY_PRIMING",
    "count_chat_tokens",
    "count_prompt_tokens",
    "count_text_tokens",
    "natural_output_tokens",
    "synthetic_text",
]

TOKENS_PER_MESSAGE = 3
TOKENS_REPLY_PRIMING = 3

_TOKENS = re.compile(r"\w{1,4}|[^\w\s]")
# Short common words (each at most 4 characters, so each counts as one token).
_ALL_WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "it",
    "that",
    "for",
    "on",
    "was",
    "with",
    "as",
    "be",
    "at",
    "by",
    "this",
    "are",
    "from",
    "or",
    "have",
    "an",
    "not",
    "but",
    "had",
    "what",
    "all",
    "were",
    "when",
    "we",
    "there",
    "can",
    "one",
    "your",
    "use",
    "each",
    "which",
    "she",
    "do",
    "how",
    "their",
    "if",
    "will",
    "up",
    "other",
    "out",
    "many",
    "then",
    "them",
    "so",
    "some",
    "her",
    "make",
    "like",
    "him",
    "into",
    "time",
    "has",
    "look",
    "two",
    "more",
    "go",
    "see",
    "way",
    "who",
    "may",
    "down",
    "side",
    "been",
    "now",
    "find",
    "any",
    "new",
    "work",
    "part",
    "take",
    "get",
    "made",
    "live",
]
_WORDS = tuple(w for w in _ALL_WORDS if len(w) <= 4)


def count_text_tokens(text: str) -> int:
    """Tokens of ``text`` under the rule in the module note."""
    # a word run of n characters matches ceil(n / 4) times, anything else once
    return len(_TOKENS.findall(text))


def count_prompt_tokens(prompt: Any) -> int:
    """Tokens of a completions ``prompt``: a string, token ids, or a one-element list of either."""
    if isinstance(prompt, str):
        return count_text_tokens(prompt)
    if isinstance(prompt, list):
        if not prompt:
            raise InvalidRequestError("prompt must not be empty", details={"param": "prompt"})
        if all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            return len(prompt)
        if len(prompt) == 1:
            return count_prompt_tokens(prompt[0])
        raise InvalidRequestError(
            "batched prompts are not supported; send one prompt per request",
            details={"param": "prompt"},
        )
    raise InvalidRequestError(
        "prompt must be a string or a list of token ids", details={"param": "prompt"}
    )


def count_chat_tokens(messages: Any) -> int:
    """Tokens of a chat ``messages`` list, with per-message and reply-priming overhead."""
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError(
            "messages must be a non-empty list", details={"param": "messages"}
        )
    total = TOKENS_REPLY_PRIMING + TOKENS_PER_MESSAGE * len(messages)
    texts: list[str] = []  # roles and contents, counted in one pass (whitespace separates them)
    for message in messages:
        if not isinstance(message, dict) and not isinstance(message, Mapping):
            raise InvalidRequestError(
                "each message must be an object", details={"param": "messages"}
            )
        texts.append(str(message.get("role", "")))
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        else:
            texts.extend(_content_texts(content))
    return total + count_text_tokens("\n".join(texts))


def natural_output_tokens(seed_text: str, *, low: int = 16, high: int = 256) -> int:
    """A deterministic 'stops by itself' output length in ``[low, high]`` for a prompt."""
    return low + zlib.crc32(seed_text.encode()) % (high - low + 1)


def synthetic_text(start: int, num_tokens: int, seed: int = 0) -> str:
    """Text of output tokens ``start .. start+num_tokens-1``: one short word per token."""
    n = len(_WORDS)
    return "".join(" " + _WORDS[(seed + i) % n] for i in range(start, start + num_tokens))


def _content_texts(content: Any) -> Iterable[str]:
    if content is None:
        return ()
    if isinstance(content, str):
        return (content,)
    if isinstance(content, list):
        return tuple(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, Mapping) and part.get("type") == "text"
        )
    raise InvalidRequestError(
        "message content must be a string or a list of parts", details={"param": "messages"}
    )
