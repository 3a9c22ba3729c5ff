"""The OpenAI request and response shapes: parsing what clients send, building what servers answer.

The gateway parses a request once here (its body is forwarded as sent, only spliced where it must
be); the virtual engine and the fake servers build their bodies and stream chunks here, so every
face of the center speaks the same dialect.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from npucenter.errors import InvalidRequestError
from npucenter.wire.tokens import count_chat_tokens, count_text_tokens

__all__ = [
    "CHAT",
    "CHAT_FIELDS",
    "COMPLETIONS",
    "COMPLETIONS_FIELDS",
    "ROLES",
    "VLLM_FIELDS",
    "completion_body",
    "find_usage",
    "new_id",
    "parse_request",
    "prompt_text",
    "prompt_tokens",
    "requested_max_tokens",
    "stream_chunk",
    "usage_dict",
    "validate_request",
    "with_include_usage",
]

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


def parse_request(raw: bytes, endpoint: str) -> dict[str, Any]:
    """The JSON object of a completions or chat request, checked by :func:`validate_request`.

    Raises:
        InvalidRequestError: not a JSON object, ``model``/``messages``/``prompt`` missing
            (``details["field"]`` names it), or a field the OpenAI API refuses (``param``).
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
    validate_request(request, endpoint)
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


# --- validation ------------------------------------------------------------------------------

#: The OpenAI API's own request fields (chat completions, completions).
CHAT_FIELDS = frozenset(
    {
        "model", "messages", "audio", "frequency_penalty", "function_call", "functions",
        "logit_bias", "logprobs", "max_completion_tokens", "max_tokens", "metadata", "modalities",
        "n", "parallel_tool_calls", "prediction", "presence_penalty", "prompt_cache_key",
        "reasoning_effort", "response_format", "safety_identifier", "seed", "service_tier",
        "stop", "store", "stream", "stream_options", "temperature", "tool_choice", "tools",
        "top_logprobs", "top_p", "user", "verbosity", "web_search_options",
    }
)  # fmt: skip
COMPLETIONS_FIELDS = frozenset(
    {
        "model", "prompt", "best_of", "echo", "frequency_penalty", "logit_bias", "logprobs",
        "max_tokens", "n", "presence_penalty", "seed", "stop", "stream", "stream_options",
        "suffix", "temperature", "top_p", "user",
    }
)  # fmt: skip
#: vLLM's extensions (furiosa-llm and vllm-rbln are vLLM-based): passed on to engines.
VLLM_FIELDS = frozenset(
    {
        "top_k", "min_p", "repetition_penalty", "length_penalty", "ignore_eos", "min_tokens",
        "stop_token_ids", "include_stop_str_in_output", "skip_special_tokens",
        "spaces_between_special_tokens", "truncate_prompt_tokens", "prompt_logprobs",
        "allowed_token_ids", "bad_words", "use_beam_search", "structured_outputs", "chat_template", "chat_template_kwargs", "add_generation_prompt",
        "continue_final_message", "add_special_tokens", "documents", "mm_processor_kwargs",
        "priority", "request_id", "return_tokens_as_token_ids", "return_token_ids", "echo",
        "cache_salt", "kv_transfer_params", "vllm_xargs", "logits_processors", "response_format",
    }
)  # fmt: skip
ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_TOOL_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def validate_request(request: dict[str, Any], endpoint: str) -> None:
    """Check a parsed request as the OpenAI API does: unknown fields, types, ranges, roles.

    vLLM's extensions are known fields too (the gateway passes them on to engines). One pass
    over the fields the request has (the gateway's hot path), each with its own check.

    Raises:
        InvalidRequestError: ``details["param"]`` names the offending parameter
            (``messages[2].role`` inside a message).
    """
    chat = endpoint == CHAT
    known = CHAT_FIELDS if chat else COMPLETIONS_FIELDS
    checks = _CHAT_CHECKS if chat else _COMPLETIONS_CHECKS
    for name in request:
        check = checks.get(name)
        if check is not None:
            check(request, name)
        elif name not in known and name not in VLLM_FIELDS:
            _refuse(name, f"Unrecognized request argument supplied: {name}")
    if chat:
        if request.get("top_logprobs") is not None and not request.get("logprobs"):
            _refuse("top_logprobs", "logprobs must be true when top_logprobs is set")
        if "tool_choice" in request:
            _check_tool_choice(request)
    if request.get("stream_options") is not None and not request.get("stream"):
        _refuse("stream_options", "stream_options is only allowed when stream is true.")


def _refuse(param: str, message: str) -> None:
    raise InvalidRequestError(message, details={"param": param})


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _number(
    request: dict[str, Any], name: str, low: float, high: float | None, *, above: bool = False
) -> None:
    value = request.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        _refuse(name, f"Invalid type for '{name}': expected a number, but got {_kind(value)}.")
    if value < low or (above and value == low) or (high is not None and value > high):
        bound = f"above {low:g}" if high is None else f"between {low:g} and {high:g}"
        _refuse(name, f"Invalid value for '{name}': must be {bound}, got {value}.")


def _integer(request: dict[str, Any], name: str, low: int | None, high: int | None = None) -> None:
    value = request.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        _refuse(name, f"Invalid type for '{name}': expected an integer, but got {_kind(value)}.")
    if (low is not None and value < low) or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"between {low} and {high}"
        _refuse(name, f"Invalid value for '{name}': must be {bound}, got {value}.")


def _boolean(request: dict[str, Any], name: str) -> None:
    value = request.get(name)
    if value is not None and not isinstance(value, bool):
        _refuse(name, f"Invalid type for '{name}': expected a boolean, but got {_kind(value)}.")


def _typed(request: dict[str, Any], name: str, kind: type, what: str) -> None:
    value = request.get(name)
    if value is not None and not isinstance(value, kind):
        _refuse(name, f"Invalid type for '{name}': expected {what}, but got {_kind(value)}.")


def _check_stream_options(request: dict[str, Any], _name: str = "stream_options") -> None:
    options = request.get("stream_options")
    if options is None:
        return
    if not isinstance(options, dict):
        _refuse("stream_options", "Invalid type for 'stream_options': expected an object.")
    for name in ("include_usage", "continuous_usage_stats"):
        value = options.get(name)
        if value is not None and not isinstance(value, bool):
            _refuse(f"stream_options.{name}", f"Invalid type for 'stream_options.{name}'.")


def _check_stop(request: dict[str, Any], _name: str = "stop") -> None:
    stop = request.get("stop")
    if stop is None or isinstance(stop, str):
        return
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        _refuse("stop", "Invalid type for 'stop': expected a string or an array of strings.")
    if len(stop) > 4:
        _refuse("stop", "Invalid value for 'stop': at most 4 stop sequences.")


def _check_logit_bias(request: dict[str, Any], _name: str = "logit_bias") -> None:
    bias = request.get("logit_bias")
    if bias is None:
        return
    if not isinstance(bias, dict):
        _refuse("logit_bias", "Invalid type for 'logit_bias': expected an object.")
    for value in bias.values():
        if isinstance(value, bool) or not isinstance(value, int | float) or abs(value) > 100:
            _refuse("logit_bias", "Invalid value for 'logit_bias': numbers in [-100, 100].")


def _check_response_format(request: dict[str, Any], _name: str = "response_format") -> None:
    fmt = request.get("response_format")
    if fmt is None:
        return
    if not isinstance(fmt, dict):
        _refuse("response_format", "Invalid type for 'response_format': expected an object.")
    kind = fmt.get("type")
    if kind not in ("text", "json_object", "json_schema"):
        _refuse(
            "response_format.type",
            f"Invalid value: {kind!r}. Supported values are: 'text', 'json_object' and "
            "'json_schema'.",
        )
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            _refuse(
                "response_format.json_schema",
                "Missing required parameter: 'response_format.json_schema' (with a 'name').",
            )
        if spec.get("schema") is not None and not isinstance(spec.get("schema"), dict):
            _refuse("response_format.json_schema.schema", "the schema must be an object")


def _check_messages(request: dict[str, Any], _name: str = "messages") -> None:
    messages = request["messages"]
    if not isinstance(messages, list):
        _refuse("messages", "Invalid type for 'messages': expected an array.")
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            _refuse(where, f"Invalid type for '{where}': expected an object.")
        role = message.get("role")
        if role is None:
            _refuse(f"{where}.role", f"Missing required parameter: '{where}.role'.")
        if role not in ROLES:
            supported = ", ".join(f"'{r}'" for r in ROLES)
            _refuse(f"{where}.role", f"Invalid value: {role!r}. Supported values are: {supported}.")
        content = message.get("content")
        if content is None:
            if role == "assistant" and (message.get("tool_calls") or message.get("function_call")):
                continue
            _refuse(f"{where}.content", f"Missing required parameter: '{where}.content'.")
        if isinstance(content, list):
            for j, part in enumerate(content):
                if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                    _refuse(f"{where}.content[{j}]", "each content part needs a 'type'")
                if part["type"] == "text" and not isinstance(part.get("text"), str):
                    _refuse(f"{where}.content[{j}].text", "a text part needs a 'text' string")
        elif not isinstance(content, str):
            _refuse(
                f"{where}.content",
                f"Invalid type for '{where}.content': expected a string or an array of parts.",
            )
        if role == "tool" and not isinstance(message.get("tool_call_id"), str):
            _refuse(f"{where}.tool_call_id", f"Missing required parameter: '{where}.tool_call_id'.")


def _check_tools(request: dict[str, Any], _name: str = "tools") -> None:
    tools = request.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            _refuse("tools", "Invalid type for 'tools': expected an array.")
        for i, tool in enumerate(tools):
            function = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(tool, dict) or tool.get("type") != "function":
                _refuse(f"tools[{i}].type", "Invalid value: tools must be of type 'function'.")
            name = function.get("name") if isinstance(function, dict) else None
            if not isinstance(name, str) or not name or not set(name) <= _TOOL_NAME_CHARS:
                _refuse(f"tools[{i}].function.name", "a function needs a name of [a-zA-Z0-9_-]")
            params = function.get("parameters")  # type: ignore[union-attr]
            if params is not None and not isinstance(params, dict):
                _refuse(f"tools[{i}].function.parameters", "parameters must be a JSON schema")


def _check_tool_choice(request: dict[str, Any]) -> None:
    tools = request.get("tools")
    choice = request.get("tool_choice")
    if choice is None or choice in ("none", "auto"):
        return
    if choice != "required":
        function = choice.get("function") if isinstance(choice, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str):
            _refuse(
                "tool_choice",
                "Invalid value for 'tool_choice': 'none', 'auto', 'required' or a function.",
            )
        if not any(t["function"]["name"] == name for t in tools or ()):
            _refuse("tool_choice", f"tool_choice names a function not in tools: {name}")
    if not tools:
        _refuse("tool_choice", "tool_choice is only allowed when tools are specified.")


Check = Callable[[dict[str, Any], str], None]


def _num(low: float, high: float | None, *, above: bool = False) -> Check:
    return lambda request, name: _number(request, name, low, high, above=above)


def _int(low: int | None, high: int | None = None) -> Check:
    return lambda request, name: _integer(request, name, low, high)


def _of(kind: type, what: str) -> Check:
    return lambda request, name: _typed(request, name, kind, what)


def _ignored_by_vllm(what: str) -> Check:
    """A field vLLM (0.32) accepts and silently ignores: refused so that nothing is ignored."""

    def check(request: dict[str, Any], name: str) -> None:
        if name != "best_of" or request[name] not in (None, 1):
            _refuse(name, f"'{name}' is not supported: {what}.")

    return check


_GUIDED = "vLLM ignores the removed guided_* fields; use response_format or structured_outputs"
_COMMON_CHECKS: dict[str, Check] = {
    "temperature": _num(0.0, 2.0),
    "top_p": _num(0.0, 1.0),
    "frequency_penalty": _num(-2.0, 2.0),
    "presence_penalty": _num(-2.0, 2.0),
    "n": _int(1, 128),
    "max_tokens": _int(1),
    "seed": _int(None),
    "min_tokens": _int(0),
    "top_k": _int(-1),
    "min_p": _num(0.0, 1.0),
    "repetition_penalty": _num(0.0, None, above=True),
    "stream": _boolean,
    "ignore_eos": _boolean,
    "user": _of(str, "a string"),
    "stream_options": _check_stream_options,
    "stop": _check_stop,
    "logit_bias": _check_logit_bias,
    "response_format": _check_response_format,
    **{
        f"guided_{kind}": _ignored_by_vllm(_GUIDED)
        for kind in ("json", "regex", "choice", "grammar", "decoding_backend", "whitespace_pattern")
    },
}
_CHAT_CHECKS: dict[str, Check] = {
    **_COMMON_CHECKS,
    "messages": _check_messages,
    "max_completion_tokens": _int(1),
    "store": _boolean,
    "parallel_tool_calls": _boolean,
    "metadata": _of(dict, "an object"),
    "logprobs": _boolean,
    "top_logprobs": _int(0, 20),
    "tools": _check_tools,
}
_COMPLETIONS_CHECKS: dict[str, Check] = {
    **_COMMON_CHECKS,
    "logprobs": _int(0, 5),
    "echo": _boolean,
    "suffix": _of(str, "a string"),
    "best_of": _ignored_by_vllm("no engine here honours best_of > 1; use n"),
}
