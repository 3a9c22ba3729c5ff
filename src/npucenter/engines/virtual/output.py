"""What the virtual engine writes for one request: text, JSON, or a tool call, token by token.

NOTE(engines): the virtual engine has no model, so it honours the OpenAI parameters whose effect
a client can check, and refuses (400, naming ``param``) those it cannot honour:

- plain text is one short word per token (:func:`npucenter.wire.tokens.synthetic_text`); the
  words' seed is ``seed`` when given, the prompt when ``temperature`` is 0, else fresh per
  request (the *length* of a naturally stopping answer always follows the prompt, so the twin
  can predict it);
- ``response_format`` ``json_object`` answers ``{"text": "<words>"}``; ``json_schema`` an object
  shaped by the schema (every property, values by type, ``enum``/``const`` honoured); a tool
  call answers ``{"name", "arguments"}`` shaped by the function's ``parameters``. The whole
  document is cut into the request's tokens, so the concatenated stream is valid JSON;
- ``stop`` cuts the output before the first stop string (``finish_reason: "stop"``; the string
  kept with ``include_stop_str_in_output``);
- ``logprobs``/``top_logprobs`` (chat) and ``logprobs`` (completions) get synthetic values of the
  OpenAI shape: the emitted token is always the most likely one.
"""

from __future__ import annotations

import json
import random
import zlib
from dataclasses import dataclass, field
from typing import Any

from npucenter.errors import InvalidRequestError
from npucenter.wire.tokens import count_text_tokens, synthetic_text

__all__ = ["OutputPlan", "plan_output", "refuse_unsupported", "word_seed"]

#: Parameters the virtual engine cannot honour (it refuses them rather than ignore them).
_UNSUPPORTED = {
    "suffix": "the virtual engine does not insert text (vLLM refuses suffix too)",
    "functions": "use tools (functions is deprecated)",
    "function_call": "use tool_choice (function_call is deprecated)",
    "audio": "the virtual engine answers text only",
    "prediction": "predicted outputs are not modelled",
    "web_search_options": "the virtual engine cannot search",
    "guided_regex": "use response_format json_schema",
    "guided_grammar": "use response_format json_schema",
    "guided_choice": "use response_format json_schema",
    "guided_json": "use response_format json_schema",
    "structured_outputs": "use response_format json_schema",
    "use_beam_search": "beam search is not modelled",
    "prompt_logprobs": "prompt logprobs are not modelled",
    "allowed_token_ids": "the virtual engine has no vocabulary ids",
    "bad_words": "the virtual engine has no vocabulary",
}


@dataclass(slots=True)
class OutputPlan:
    """The request's output, decided before the first step: ``num_tokens`` pieces of text
    (``pieces`` ``None``: plain synthetic words, made lazily), a finish reason, an optional
    tool call (id, name) and how many alternatives each token's logprobs list."""

    num_tokens: int
    seed: int
    finish_reason: str
    pieces: list[str] | None = None
    tool_call: tuple[str, str] | None = None
    top_logprobs: int | None = None  # None: no logprobs asked
    echo: str = ""
    _alts: list[str] = field(default_factory=list)

    def text(self, start: int, count: int) -> str:
        """The text of tokens ``start .. start+count-1``."""
        if self.pieces is None:
            return synthetic_text(start, count, self.seed)
        return "".join(self.pieces[start : start + count])

    def token(self, i: int) -> str:
        """Token ``i``'s text."""
        return self.text(i, 1)

    def chat_logprobs(self, start: int, count: int) -> dict[str, Any] | None:
        """The chat ``logprobs`` object of tokens ``start .. start+count-1`` (None: not asked)."""
        if self.top_logprobs is None:
            return None
        content = []
        for i in range(start, start + count):
            token, logprob = self.token(i), _logprob(self.seed, i)
            alts = [
                {"token": t, "logprob": lp, "bytes": list(t.encode())}
                for t, lp in self._alternatives(i, token, logprob)
            ]
            content.append(
                {
                    "token": token,
                    "logprob": logprob,
                    "bytes": list(token.encode()),
                    "top_logprobs": alts,
                }
            )
        return {"content": content}

    def completion_logprobs(self, start: int, count: int, offset: int) -> dict[str, Any] | None:
        """The completions ``logprobs`` object (``offset``: text characters before ``start``)."""
        if self.top_logprobs is None:
            return None
        tokens, values, tops, offsets = [], [], [], []
        for i in range(start, start + count):
            token, logprob = self.token(i), _logprob(self.seed, i)
            tokens.append(token)
            values.append(logprob)
            tops.append(dict(self._alternatives(i, token, logprob)) if self.top_logprobs else None)
            offsets.append(offset)
            offset += len(token)
        return {
            "tokens": tokens,
            "token_logprobs": values,
            "top_logprobs": tops,
            "text_offset": offsets,
        }

    def _alternatives(self, i: int, token: str, logprob: float) -> list[tuple[str, float]]:
        if not self.top_logprobs:
            return []
        others = [f" {w}" for w in ("a", "one", "so", "the", "it", "we", "be", "do")]
        alts = [(token, logprob)]
        for k, other in enumerate(o for o in others if o != token):
            if len(alts) >= self.top_logprobs:
                break
            alts.append((other, round(logprob - 1.5 - 0.75 * k - 0.01 * ((self.seed + i) % 7), 4)))
        return alts


def word_seed(body: dict[str, Any], seed_text: str) -> int:
    """The synthetic words' seed (see the module note)."""
    seed = body.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool):
        return zlib.crc32(f"{seed}:{seed_text}".encode())
    if body.get("temperature") == 0:
        return len(seed_text)
    return random.getrandbits(31)


def refuse_unsupported(body: dict[str, Any], *, chat: bool, token_ids_prompt: bool) -> None:
    """Raise for a parameter the virtual engine cannot honour (``details["param"]`` names it)."""
    for name, why in _UNSUPPORTED.items():
        if body.get(name) is not None:
            raise InvalidRequestError(f"{name} is not supported: {why}", details={"param": name})
    if body.get("logit_bias"):
        raise InvalidRequestError(
            "logit_bias is not supported: the virtual engine has no vocabulary",
            details={"param": "logit_bias"},
        )
    if (body.get("best_of") or 1) > 1:
        raise InvalidRequestError("only best_of=1 is supported", details={"param": "best_of"})
    modalities = body.get("modalities")
    if modalities is not None and list(modalities) != ["text"]:
        raise InvalidRequestError("only text output is supported", details={"param": "modalities"})
    if chat:
        for i, message in enumerate(body.get("messages") or ()):
            content = message.get("content") if isinstance(message, dict) else None
            for j, part in enumerate(content if isinstance(content, list) else ()):
                if isinstance(part, dict) and part.get("type") not in ("text", None):
                    raise InvalidRequestError(
                        f"content part type {part.get('type')!r} is not supported: the virtual "
                        "engine reads text only",
                        details={"param": f"messages[{i}].content[{j}].type"},
                    )
    elif body.get("echo"):
        if token_ids_prompt:
            raise InvalidRequestError(
                "echo needs a text prompt on the virtual engine", details={"param": "echo"}
            )
        if body.get("logprobs") is not None:
            raise InvalidRequestError(
                "echo with logprobs is not supported (no prompt logprobs)",
                details={"param": "logprobs"},
            )


def plan_output(
    body: dict[str, Any],
    *,
    chat: bool,
    num_tokens: int,
    natural: bool,
    seed: int,
) -> OutputPlan:
    """The output of a request that may produce ``num_tokens`` tokens (``natural``: it may stop
    earlier by itself, as a model would at the end of a JSON document or a tool call)."""
    reason = "stop" if natural else "length"
    plan = OutputPlan(num_tokens=num_tokens, seed=seed, finish_reason=reason)
    if chat:
        if body.get("logprobs"):
            plan.top_logprobs = int(body.get("top_logprobs") or 0)
    elif body.get("logprobs") is not None:
        plan.top_logprobs = int(body["logprobs"])
    if not chat and body.get("echo"):
        plan.echo = str(body["prompt"] if isinstance(body["prompt"], str) else body["prompt"][0])
    rng = random.Random(seed)
    tool = _chosen_tool(body) if chat else None
    document: str | None = None
    if tool is not None:
        name = str(tool["function"]["name"])
        document = json.dumps(_value(tool["function"].get("parameters") or {"type": "object"}, rng))
        plan.tool_call = (f"call_{seed:08x}", name)
        plan.finish_reason = "tool_calls"
    else:
        fmt = body.get("response_format") or {}
        if fmt.get("type") == "json_object":
            words = synthetic_text(0, max(1, num_tokens - 6), seed).strip()
            document = json.dumps({"text": words})
        elif fmt.get("type") == "json_schema":
            schema = (fmt.get("json_schema") or {}).get("schema") or {"type": "object"}
            document = json.dumps(_value(schema, rng))
    if document is not None:
        need = max(1, count_text_tokens(document))
        n = num_tokens if body.get("ignore_eos") else min(num_tokens, need)
        plan.pieces = _cut(document, n)
        plan.num_tokens = n
        if plan.tool_call is None:
            plan.finish_reason = "stop" if n == need or n < num_tokens else "length"
    _apply_stop(plan, body)
    return plan


def _chosen_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    tools = body.get("tools") or []
    choice = body.get("tool_choice")
    if not tools or choice == "none":
        return None
    chosen: dict[str, Any] = tools[0]  # "required" or "auto": the first tool is always called
    if isinstance(choice, dict):
        name = choice["function"]["name"]
        chosen = next(t for t in tools if t["function"]["name"] == name)
    return chosen


def _apply_stop(plan: OutputPlan, body: dict[str, Any]) -> None:
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else list(stop or ())
    stops = [s for s in stops if s]
    if not stops or plan.tool_call is not None:
        return
    full = plan.text(0, plan.num_tokens)
    cuts = [(full.find(s), s) for s in stops if full.find(s) >= 0]
    if not cuts:
        return
    pos, hit = min(cuts)
    if body.get("include_stop_str_in_output"):
        pos += len(hit)
    pieces = [plan.token(i) for i in range(plan.num_tokens)]
    kept: list[str] = []
    start = 0
    for piece in pieces:
        if start >= pos:
            break
        kept.append(piece[: pos - start])
        start += len(piece)
    plan.pieces = kept or [""]
    plan.num_tokens = len(plan.pieces)
    plan.finish_reason = "stop"


def _cut(text: str, n: int) -> list[str]:
    """``text`` in ``n`` non-empty pieces where it has the characters (then trailing blanks)."""
    if n <= len(text):
        bounds = [round(i * len(text) / n) for i in range(n + 1)]
        return [text[bounds[i] : bounds[i + 1]] for i in range(n)]
    return [*text, *([" "] * (n - len(text)))]


def _value(schema: Any, rng: random.Random, depth: int = 0) -> Any:
    """A value that satisfies the common JSON-schema keywords of ``schema``."""
    if not isinstance(schema, dict) or depth > 8:
        return None
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return _value(schema[key][0], rng, depth + 1)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties") or {}
        return {name: _value(sub, rng, depth + 1) for name, sub in props.items()}
    if kind == "array":
        return [_value(schema.get("items") or {}, rng, depth + 1)]
    if kind == "integer":
        low = schema.get("minimum", 0)
        return int(low) + rng.randrange(0, 10)
    if kind == "number":
        return float(schema.get("minimum", 0)) + round(rng.random() * 10, 2)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    return synthetic_text(0, 2 + rng.randrange(3), rng.randrange(1 << 16)).strip()


def _logprob(seed: int, i: int) -> float:
    return -round(0.01 + ((seed * 31 + i * 17) % 97) / 250, 4)
