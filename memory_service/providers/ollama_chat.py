"""Ollama's native `POST /api/chat`, spoken in OpenAI's shapes.

Used only where needed: an Ollama older than its OpenAI-compatible routes (added in 0.1.24)
answers `/v1/chat/completions` with gin's plain-text `404 page not found`; the client then
uses `/api/chat` for that server, for good (providers.chat).

Translation (ollama/docs/api.md, "Generate a chat completion"):
- request: `messages` as they are (list content joined to text), `stream` always explicit
  (the native default is to stream), OpenAI sampling parameters into `options`
  (`max_tokens` / `max_completion_tokens` -> `num_predict`), `response_format` json_object ->
  `format: "json"`. A parameter with no native equivalent (tools, n > 1, logprobs, ...) is not
  dropped: the request is refused for this provider (ProviderUnavailable), so it fails over
  to one that can serve it.
- answer: `{"message": {...}, "done_reason", "prompt_eval_count", "eval_count"}` becomes a
  `chat.completion`; a stream of NDJSON objects becomes `chat.completion.chunk` events ending
  with the finish chunk (and a usage chunk when `stream_options.include_usage`), then `[DONE]`.
"""

import json
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

from memory_service.providers.errors import ProviderBadResponse, ProviderUnavailable

JSONObject = dict[str, Any]

_OPTIONS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "seed": "seed",
    "stop": "stop",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "max_tokens": "num_predict",
    "max_completion_tokens": "num_predict",
}
_PASSED = {"model", "messages", "stream", "stream_options", "response_format", "user", "n"}


def native_request(provider: str, payload: JSONObject, keep_alive: str | None) -> JSONObject:
    unsupported = sorted(set(payload) - set(_OPTIONS) - _PASSED)
    if payload.get("n", 1) != 1:
        unsupported.append("n")
    response_format = payload.get("response_format")
    format_type = response_format.get("type") if isinstance(response_format, dict) else None
    if response_format is not None and format_type not in ("text", "json_object"):
        unsupported.append("response_format")
    unsupported.extend(
        f"messages[{index}]: {what}"
        for index, message in enumerate(payload["messages"])
        if (what := _unsupported_in(message))
    )
    if unsupported:
        raise ProviderUnavailable(
            provider, f"Ollama's native /api/chat cannot serve parameters {unsupported}"
        )
    body: JSONObject = {
        "model": payload["model"],
        "messages": [_native_message(m) for m in payload["messages"]],
        "stream": bool(payload.get("stream")),
    }
    options = {_OPTIONS[k]: v for k, v in payload.items() if k in _OPTIONS}
    if options:
        body["options"] = options
    if format_type == "json_object":
        body["format"] = "json"
    if keep_alive is not None:
        body["keep_alive"] = keep_alive
    return body


def _unsupported_in(message: JSONObject) -> str | None:
    """What of a message the native API cannot carry: fields beyond role and content
    (tool calls, names), or content parts other than text (images)."""
    extra = sorted(set(message) - {"role", "content"})
    if extra:
        return f"fields {extra}"
    content = message.get("content")
    if isinstance(content, list) and any(
        not isinstance(part, dict) or part.get("type") != "text" for part in content
    ):
        return "content parts other than text"
    return None


def _native_message(message: JSONObject) -> JSONObject:
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(str(part.get("text", "")) for part in content)
    # Ollama knows system, user, assistant and tool; OpenAI's `developer` is its system.
    role = "system" if message["role"] == "developer" else message["role"]
    return {"role": role, "content": content or ""}


def completion(provider: str, body: JSONObject) -> JSONObject:
    """A native non-streamed answer as a `chat.completion`."""
    message = body.get("message")
    if not isinstance(message, dict) or not isinstance(message.get("content"), str):
        raise ProviderBadResponse(provider, f"a native chat answer without a message: {body}")
    return {
        "id": _new_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", ""),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": message["content"]},
                "finish_reason": _finish(body),
            }
        ],
        "usage": _usage(body),
    }


async def chunk_events(
    provider: str, lines: AsyncIterator[str], include_usage: bool
) -> AsyncIterator[str]:
    """Native NDJSON stream lines as OpenAI chunk event payloads, `[DONE]` last."""
    chunk_id, created = _new_id(), int(time.time())
    first = True
    async for line in lines:
        if not line.strip():
            continue
        try:
            part = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ProviderBadResponse(provider, f"not an NDJSON line: {line[:200]!r}") from exc
        if not isinstance(part, dict):
            raise ProviderBadResponse(provider, f"not a JSON object: {line[:200]!r}")
        if "error" in part:
            raise ProviderUnavailable(provider, f"error mid-stream: {part['error']}")
        model = part.get("model", "")
        message = part.get("message")
        text = message.get("content", "") if isinstance(message, dict) else ""
        if not isinstance(text, str):
            raise ProviderBadResponse(provider, f"a message without text content: {line[:200]!r}")
        if first or text:
            delta = {"role": "assistant", "content": text} if first else {"content": text}
            yield _chunk(chunk_id, created, model, delta, None)
            first = False
        if part.get("done"):
            yield _chunk(chunk_id, created, model, {}, _finish(part))
            if include_usage:
                usage = {"id": chunk_id, "object": "chat.completion.chunk", "created": created}
                yield json.dumps({**usage, "model": model, "choices": [], "usage": _usage(part)})
            yield "[DONE]"
            return


def _chunk(chunk_id: str, created: int, model: str, delta: JSONObject, finish: str | None) -> str:
    return json.dumps(
        {
            "id": chunk_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
    )


def _finish(body: JSONObject) -> str:
    reason = body.get("done_reason") or "stop"
    return "length" if reason == "length" else "stop"


def _usage(body: JSONObject) -> JSONObject:
    prompt, completion_tokens = (
        int(body.get("prompt_eval_count", 0)),
        int(body.get("eval_count", 0)),
    )
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt + completion_tokens,
    }


def _new_id() -> str:
    return f"chatcmpl-{secrets.token_hex(12)}"


def _count(body: JSONObject, key: str) -> int:
    """A token count Ollama reports; 0 when it reports none (a cached prompt has none)."""
    value = body.get(key)
    return value if isinstance(value, int) else 0
