"""The OpenAI request and response shapes: parsing what clients send, building what servers answer.

The gateway parses a request once here (its body is forwarded as sent, only spliced where it must
be); the virtual engine and the fake servers build their bodies and stream chunks here, so every
face of the center speaks the same dialect.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from npucenter.errors import InvalidRequestError
from npucenter.wire.tokens import count_chat_tokens, count_text_tokens

__all__ = [
    "CHAT",
    "COMPLETIONS",
    "completion_body",
    "find_usage",
    "new_id",
    "parse_request",
    "prompt_text",
    "prompt_tokens",
    "requested_max_tokens",
    "stream_chunk",
    "usage_dict",
    "with_include_usage",
]

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


def parse_request(raw: bytes, endpoint: str) -> dict[str, Any]:
    """The JSON object of a completions or chat request, with its required fields checked.

    Raises:
        InvalidRequestError: not a JSON object, or ``model``/``messages``/``prompt`` missing
            (``details["field"]`` names the parameter).
    """
    try:
        request = json.loads(raw)
    except ValueError as exc:
        raise InvalidRequestError(f"the body is not valid JSON: {exc}") from None
    except RecursionError:  # thousands of nested arrays: the client's error, no internals shown
        raise InvalidRequestError("the body is nested too deeply") from None
    if not isinstance(request, dict):
        raise InvalidRequestError("the body must be a JSON object")
    model = request.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequestError("`model` is required", details={"field": "model"})
    if endpoint == CHAT:
        messages = request.get("messages")
        if not isinstance(messages, list) or not messages:
            raise InvalidRequestError(
                "`messages` must be a non-empty list", details={"field": "messages"}
            )
    elif "prompt" not in request:
        raise InvalidRequestError("`prompt` is required", details={"field": "prompt"})
    return request


def requested_max_tokens(request: dict[str, Any], default: int) -> int:
    """``max_completion_tokens`` or ``max_tokens``, else ``default``."""
    value = request.get("max_completion_tokens", request.get("max_tokens"))
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidRequestError(
            "`max_tokens` must be a positive integer", details={"field": "max_tokens"}
        )
    return value


def prompt_text(request: dict[str, Any], endpoint: str) -> tuple[str, int]:
    """The prompt as text (for the token estimate and prefix hashes) and its count of token ids."""
    if endpoint == COMPLETIONS:
        return _completions_prompt(request.get("prompt"))
    parts: list[str] = []
    for message in request.get("messages") or ():
        if not isinstance(message, dict):
            raise InvalidRequestError(
                "each message must be an object", details={"field": "messages"}
            )
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "\n".join(parts), 0


def prompt_tokens(request: dict[str, Any], endpoint: str, text: str, num_ids: int) -> int:
    """The prompt's tokens by the one rule of :mod:`npucenter.wire.tokens` (``text`` and
    ``num_ids`` from :func:`prompt_text`; chat counts its messages with their overhead)."""
    if endpoint == CHAT:
        return count_chat_tokens(request.get("messages"))
    return num_ids + count_text_tokens(text)


def with_include_usage(raw: bytes, request: dict[str, Any]) -> bytes:
    """The body with ``stream_options.include_usage`` set (spliced in when the client sent no
    ``stream_options``, to spare re-serialising a long prompt)."""
    options = request.get("stream_options")
    if options is None and "stream_options" not in request:
        end = raw.rstrip()
        if end.endswith(b"}"):
            return end[:-1] + b',"stream_options":{"include_usage":true}}'
    merged = dict(options) if isinstance(options, dict) else {}
    return json.dumps({**request, "stream_options": {**merged, "include_usage": True}}).encode()


def find_usage(body: bytes) -> dict[str, Any] | None:
    """The ``usage`` object of a JSON response or chunk, if any."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    usage = data.get("usage") if isinstance(data, dict) else None
    return usage if isinstance(usage, dict) else None


def usage_dict(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """OpenAI's ``usage`` object."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def new_id(chat: bool) -> str:
    """A fresh response id (``chatcmpl-…`` or ``cmpl-…``)."""
    return ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex


def completion_body(
    *,
    chat: bool,
    model: str,
    text: str,
    finish_reason: str,
    usage: dict[str, Any],
    response_id: str | None = None,
) -> dict[str, Any]:
    """A whole (non-streamed) chat completion or text completion."""
    choice: dict[str, Any]
    if chat:
        message = {"role": "assistant", "content": text}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
    return {
        "id": response_id or new_id(chat),
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": usage,
    }


def stream_chunk(
    *,
    chat: bool,
    model: str,
    response_id: str,
    text: str | None = None,
    finish_reason: str | None = None,
    usage: dict[str, Any] | None = None,
    delta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One stream chunk: a choice with ``text`` (or a chat ``delta``), or ``choices: []`` with
    ``usage`` when neither text, delta nor finish reason is given."""
    choices: list[dict[str, Any]] = []
    if text is not None or delta is not None or finish_reason is not None:
        if chat:
            body = delta if delta is not None else ({"content": text} if text else {})
            choices.append(
                {"index": 0, "delta": body, "logprobs": None, "finish_reason": finish_reason}
            )
        else:
            choices.append(
                {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
            )
    chunk: dict[str, Any] = {
        "id": response_id,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
    }
    if usage is not None:
        chunk["usage"] = usage
    return chunk


def _completions_prompt(prompt: Any) -> tuple[str, int]:
    bad = InvalidRequestError(
        "`prompt` must be a string, token ids, or a list of either", details={"field": "prompt"}
    )
    if isinstance(prompt, str):
        return prompt, 0
    if not isinstance(prompt, list):
        raise bad
    if all(isinstance(p, int) for p in prompt):  # one prompt of token ids
        return "", len(prompt)
    texts: list[str] = []
    num_ids = 0
    for p in prompt:
        if isinstance(p, str):
            texts.append(p)
        elif isinstance(p, list):
            num_ids += len(p)
        else:
            raise bad
    return "\n".join(texts), num_ids
