"""A loopback vLLM 0.32 OpenAI-compatible embedding server over the real model.

Routes (wire shapes and sources in `vllm_wire`):

- `GET /health`: 200, empty body; 503, empty body, under `error_500` (vLLM answers 503 once
  `EngineDeadError` is raised, and a dead engine is what `error_500` emulates).
- `GET /version`: `{"version": "0.32.0"}`.
- `GET /v1/models`: `{"object": "list", "data": [ModelCard...]}`, one card per served name, with
  `owned_by: "vllm"`, `root` (the `--model` path), `max_model_len` and one `model_permission`.
- `POST /v1/embeddings`: vLLM's checks in vLLM's order, each with vLLM's body:
  content type (400) -> request validation (400) -> model name (404) -> empty input (400) ->
  characters, then tokens, per prompt against `max_model_len` (400) -> `dimensions` (400, the
  model has no Matryoshka support) -> engine (`error_500`: 500) -> vectors.
  `encoding_format` `float` (JSON numbers), `base64` (float32 bytes, default native order, i.e.
  little-endian), `bytes` and `bytes_only` (`application/octet-stream`, `metadata` header) are
  served; `embed_dtype` float32 and float16 and all three `endianness` values are emulated.
- anything else: FastAPI's `{"detail": "Not Found"}` 404 / `{"detail": "Method Not Allowed"}` 405.

Faults: transport faults act on every route (see `runner`); `error_500` on the embeddings route
and `/health`; `wrong_dimension`, `other_model` on the vectors; `no_base64` answers a base64
request the way vLLM 0.4.x did (flat 400 body) and leaves float requests alone.

Not emulated (answered with a 400 that says so rather than faked): token-id input,
`truncate_prompt_tokens` other than -1, `embed_dtype` bfloat16/fp8. With
`truncate_prompt_tokens: -1` the model truncates at its own window, which equals vLLM's only
when `max_model_len` is the model's window (256 for the bundled model).
"""

import json
from collections.abc import Sequence

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from tests.servers import vllm_wire
from tests.servers.embedder import CountTokensFn, EmbedFn, apply_vector_fault
from tests.servers.faults import JSON, Fault, OpenAIFaults
from tests.servers.runner import LoopbackServer, fault_of


class OpenAICompatServer(LoopbackServer[OpenAIFaults]):
    """vLLM's OpenAI-compatible server for `served_model_name`, computing vectors with `embed`.

    `tokenizer_count` counts tokens including special tokens (what vLLM checks against
    `max_model_len` and reports in `usage`). `max_chars_per_token` enables vLLM's cheaper
    pre-check on characters (`max_model_len * max_chars_per_token`); None skips it.
    """

    def __init__(
        self,
        embed: EmbedFn,
        *,
        tokenizer_count: CountTokensFn,
        served_model_name: str | Sequence[str] = "all-MiniLM-L6-v2",
        max_model_len: int = 256,
        model_root: str | None = None,
        max_chars_per_token: int | None = None,
        version: str = vllm_wire.VLLM_VERSION,
    ) -> None:
        super().__init__(OpenAIFaults())
        names = [served_model_name] if isinstance(served_model_name, str) else served_model_name
        if not names:
            raise ValueError("a vLLM server serves at least one model name")
        self.served_model_names: list[str] = list(names)
        self.max_model_len = max_model_len
        self.model_root = model_root or self.served_model_names[0]
        self.version = version
        self._embed = embed
        self._count_tokens = tokenizer_count
        self._max_chars_per_token = max_chars_per_token

    def _protocol_app(self) -> ASGIApp:
        routes = [
            Route("/health", self._health, methods=["GET"]),
            Route("/version", self._version, methods=["GET"]),
            Route("/v1/models", self._models, methods=["GET"]),
            Route("/v1/embeddings", self._embeddings, methods=["POST"]),
        ]
        for route in routes:  # FastAPI, unlike Starlette, does not answer HEAD for a GET route
            route.methods = {method for method in route.methods or () if method != "HEAD"}
        return Starlette(routes=routes, exception_handlers={HTTPException: _fastapi_http_error})

    async def _health(self, request: Request) -> Response:
        return Response(status_code=503 if fault_of(request).fault is Fault.ERROR_500 else 200)

    async def _version(self, request: Request) -> Response:
        return JSONResponse({"version": self.version})

    async def _models(self, request: Request) -> Response:
        names = self.served_model_names
        return JSONResponse(vllm_wire.model_list(names, self.model_root, self.max_model_len))

    async def _embeddings(self, request: Request) -> Response:
        media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media_type != "application/json":
            unsupported = "Unsupported Media Type: Only 'application/json' is allowed"
            return vllm_wire.validation_error([unsupported])
        try:
            body: JSON = json.loads(await request.body())
        except json.JSONDecodeError as error:
            return vllm_wire.json_invalid(error)
        parsed = vllm_wire.parse_embedding_request(body)
        if isinstance(parsed, Response):
            return parsed
        return await self._embed_request(request, parsed)

    async def _embed_request(
        self, request: Request, parsed: vllm_wire.EmbeddingRequest
    ) -> Response:
        if parsed.model and parsed.model not in self.served_model_names:
            return vllm_wire.unknown_model(parsed.model)
        setting = fault_of(request)
        if setting.fault is Fault.NO_BASE64 and parsed.encoding_format == "base64":
            return vllm_wire.base64_unsupported()
        if refusal := _not_emulated(parsed):
            return refusal
        texts = parsed.texts or []
        if not texts:
            return vllm_wire.bad_request("You must pass at least one prompt")
        counts = await self.call_model(self._count_tokens, texts)
        if parsed.truncate_prompt_tokens is None and (error := self._length_error(texts, counts)):
            return error
        if parsed.dimensions is not None:
            return vllm_wire.dimensions_error(self.served_model_names[0], parsed.dimensions)
        if setting.fault is Fault.ERROR_500:
            return vllm_wire.engine_dead()
        vectors = apply_vector_fault(await self.call_model(self._embed, texts), setting)
        request_id = f"embd-{request.headers.get('x-request-id') or vllm_wire.random_uuid()}"
        prompt_tokens = sum(min(count, self.max_model_len) for count in counts)
        model = self.served_model_names[0]
        return vllm_wire.embedding_response(
            parsed, request_id, model, vectors, prompt_tokens, setting.fault is Fault.SHUFFLED
        )

    def _length_error(self, texts: list[str], counts: list[int]) -> Response | None:
        """The first prompt vLLM's renderer refuses, checked as it does: characters, then tokens."""
        limit = self.max_model_len
        for text, count in zip(texts, counts, strict=True):
            if self._max_chars_per_token is not None:
                max_chars = limit * self._max_chars_per_token
                if len(text) > max_chars:
                    return vllm_wire.input_chars_error(limit, len(text), max_chars)
            if count > limit:
                # vLLM tokenizes with max_length = max_model_len + 1, so it never sees more.
                return vllm_wire.input_tokens_error(limit, min(count, limit + 1))
        return None


def _not_emulated(parsed: vllm_wire.EmbeddingRequest) -> Response | None:
    if parsed.texts is None:
        return vllm_wire.not_emulated("token-id input")
    if parsed.truncate_prompt_tokens not in (None, -1):
        return vllm_wire.not_emulated("truncate_prompt_tokens other than -1")
    if parsed.embed_dtype not in vllm_wire.EMULATED_DTYPES:
        return vllm_wire.not_emulated(f"embed_dtype {parsed.embed_dtype!r}")
    return None


async def _fastapi_http_error(request: Request, error: Exception) -> Response:
    """FastAPI's default handler for Starlette's HTTPException (unknown route, wrong method)."""
    assert isinstance(error, HTTPException)
    return JSONResponse({"detail": error.detail}, error.status_code, headers=error.headers)
