"""Wire shapes of the OpenAI-compatible chat APIs the loopback chat server speaks, per flavour.

Every flavour answers `POST {prefix}/chat/completions` and `GET {prefix}/models` in OpenAI's
shapes (chat.completion, chat.completion.chunk over SSE ending in `data: [DONE]`); they differ
where the real servers differ:

- `vllm` (prefix `/v1`, no key): `GET /health`; errors `{"error": {message, type, param, code}}`
  with `type` an exception name and `code` the HTTP status (vllm/entrypoints/openai/protocol.py
  `ErrorResponse`); a request over the context window is a 400 naming both token counts; an
  engine failure inside a stream is sent as one `data: {"error": ...}` event, then `[DONE]`
  (serving_chat.py, `create_streaming_error_response`).
- `ollama` (prefix `/v1`, no key): `GET /api/tags`, `GET /api/version`; errors
  `{"error": {message, type: "api_error" | "invalid_request_error", param: null, code: null}}`
  (ollama/openai/openai.go `NewError`).
- `groq` (prefix `/openai/v1`, bearer key): OpenAI's error object with a string `code`
  (`invalid_api_key`, `model_not_found`, `rate_limit_exceeded`); model cards carry
  `context_window`.
- `gemini` (prefix `/v1beta/openai`, bearer key): errors are Google RPC statuses wrapped in a
  one-element JSON array, `[{"error": {code, message, status}}]`, a bad key being a 400 with
  reason `API_KEY_INVALID`; model ids are listed as `models/<name>`.
"""

import json
import secrets
import time
from dataclasses import dataclass
from typing import Final, Literal

from starlette.responses import JSONResponse

from tests.servers.faults import JSON

Flavour = Literal["vllm", "ollama", "groq", "gemini"]

PREFIXES: Final[dict[Flavour, str]] = {
    "vllm": "/v1",
    "ollama": "/v1",
    "groq": "/openai/v1",
    "gemini": "/v1beta/openai",
}

_OPENAI_TYPES: Final = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    429: "tokens",
    500: "internal_server_error",
    503: "service_unavailable",
}
_VLLM_TYPES: Final = {
    400: "BadRequestError",
    404: "NotFoundError",
    429: "RateLimitError",
    500: "InternalServerError",
}
_GOOGLE_STATUS: Final = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


def error_body(flavour: Flavour, status: int, message: str, code: str | None = None) -> JSON:
    """The flavour's error document for `status`."""
    if flavour == "gemini":
        inner: dict[str, JSON] = {
            "code": status,
            "message": message,
            "status": _GOOGLE_STATUS.get(status, "UNKNOWN"),
        }
        if code is not None:
            inner["details"] = [
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": code}
            ]
        return [{"error": inner}]
    if flavour == "vllm":
        err_type = _VLLM_TYPES.get(status, "InternalServerError")
        return {"error": {"message": message, "type": err_type, "param": None, "code": status}}
    if flavour == "ollama":
        err_type = "invalid_request_error" if status < 500 else "api_error"
        return {"error": {"message": message, "type": err_type, "param": None, "code": None}}
    return {
        "error": {
            "message": message,
            "type": _OPENAI_TYPES.get(status, "api_error"),
            "code": code,
        }
    }


def error_response(
    flavour: Flavour, status: int, message: str, code: str | None = None
) -> JSONResponse:
    return JSONResponse(error_body(flavour, status, message, code), status_code=status)


def unknown_model(flavour: Flavour, model: str) -> JSONResponse:
    messages = {
        "vllm": f"The model `{model}` does not exist.",
        "ollama": f'model "{model}" not found, try pulling it first',
        "groq": f"The model `{model}` does not exist or you do not have access to it.",
        "gemini": f"models/{model} is not found for API version v1main, or is not supported.",
    }
    return error_response(flavour, 404, messages[flavour], "model_not_found")


def bad_key(flavour: Flavour) -> JSONResponse:
    if flavour == "gemini":
        message = "API key not valid. Please pass a valid API key."
        return error_response(flavour, 400, message, "API_KEY_INVALID")
    return error_response(flavour, 401, "Invalid API Key", "invalid_api_key")


def context_too_long(flavour: Flavour, window: int, prompt: int, completion: int) -> JSONResponse:
    message = (
        f"This model's maximum context length is {window} tokens. However, you requested "
        f"{prompt + completion} tokens ({prompt} in the messages, {completion} in the "
        "completion). Please reduce the length of the messages or completion."
    )
    return error_response(flavour, 400, message, "context_length_exceeded")


def server_error(flavour: Flavour) -> JSONResponse:
    if flavour == "vllm":
        return error_response(flavour, 500, "EngineCore encountered an issue.")
    return error_response(flavour, 500, "Internal server error")


def rate_limited(flavour: Flavour) -> JSONResponse:
    message = "Rate limit reached for model: requests per minute (RPM): Limit 30, Used 30"
    response = error_response(flavour, 429, message, "rate_limit_exceeded")
    response.headers["retry-after"] = "2"
    return response


def model_list(flavour: Flavour, names: list[str], context_window: int) -> JSON:
    created = int(time.time())
    cards: list[JSON] = []
    for name in names:
        card: dict[str, JSON] = {"id": name, "object": "model", "created": created}
        if flavour == "gemini":
            card = {"id": f"models/{name}", "object": "model", "owned_by": "google"}
        elif flavour == "groq":
            card |= {"owned_by": "Meta", "active": True, "context_window": context_window}
        elif flavour == "vllm":
            card |= {"owned_by": "vllm", "root": name, "max_model_len": context_window}
        else:
            card |= {"owned_by": "library"}
        cards.append(card)
    return {"object": "list", "data": cards}


@dataclass(frozen=True)
class Completion:
    """One deterministic answer: `words` joined by spaces is the content."""

    id: str
    model: str
    words: list[str]
    prompt_tokens: int

    @property
    def usage(self) -> JSON:
        completion = len(self.words)
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }


def new_id() -> str:
    return f"chatcmpl-{secrets.token_hex(12)}"


def completion_body(completion: Completion) -> JSON:
    return {
        "id": completion.id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": completion.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": " ".join(completion.words)},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": completion.usage,
    }


def chunk_event(completion: Completion, delta: JSON, finish: str | None = None) -> bytes:
    body: JSON = {
        "id": completion.id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": completion.model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    return sse(body)


def usage_event(completion: Completion) -> bytes:
    body: JSON = {
        "id": completion.id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": completion.model,
        "choices": [],
        "usage": completion.usage,
    }
    return sse(body)


def sse(body: JSON) -> bytes:
    return f"data: {json.dumps(body)}\n\n".encode()


DONE: Final = b"data: [DONE]\n\n"
