"""A loopback Ollama server over the real model (wire shapes and sources in `ollama_wire`).

Routes: `GET|HEAD /`, `GET|HEAD /api/version`, `GET|HEAD /api/tags`, `POST /api/embed`, legacy
`POST /api/embeddings`; anything else gets gin's plain-text 404/405.

`/api/embed` checks in Ollama's order: body (400) -> field types (400) -> model name (empty: 404
"model '' not found") -> input type (400 "invalid input type") -> model pulled? (404) -> runner
(`error_500`: 500) -> empty input (200, no vectors) -> context (`truncate: false`: 400) ->
vectors, L2-normalized, optionally cut to `dimensions` and normalized again.

`num_ctx` is the context the server enforces, in tokens including special tokens. It defaults
to 256, the bundled model's window: a real `all-minilm` reports 512, but the vectors here come
from a model that stops at 256, so a larger value would claim text it silently ignores. A
request's `options.num_ctx` lowers it; with truncation on, the model itself cuts at its window.

Faults: transport faults act on every route; `error_500`, `wrong_dimension` and `other_model` on
both embedding routes; `legacy_only` turns `/api/embed` into gin's 404 and leaves the legacy
route working. Vector faults apply before Ollama's normalization, as a different model would.
"""

import json
import time
from collections.abc import Sequence

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from tests.servers import ollama_wire as wire
from tests.servers.embedder import (
    CountTokensFn,
    EmbedFn,
    Vectors,
    apply_vector_fault,
    float32_json,
    unit_rows,
)
from tests.servers.faults import JSON, Fault, FaultSetting, OllamaFaults
from tests.servers.runner import LoopbackServer, fault_of

_EMBED_FIELDS = (("model", "string"), ("truncate", "bool"), ("dimensions", "int"))
_LEGACY_FIELDS = (("model", "string"), ("prompt", "string"))


class OllamaServer(LoopbackServer[OllamaFaults]):
    """Ollama serving `models` (names or `OllamaModel`s), computing vectors with `embed`."""

    def __init__(
        self,
        embed: EmbedFn,
        *,
        tokenizer_count: CountTokensFn,
        models: Sequence[str | wire.OllamaModel] = ("all-minilm:latest",),
        num_ctx: int = 256,
        version: str = wire.OLLAMA_VERSION,
    ) -> None:
        super().__init__(OllamaFaults())
        self.models = [
            m if isinstance(m, wire.OllamaModel) else wire.OllamaModel(m) for m in models
        ]
        self.num_ctx = num_ctx
        self.version = version
        self._embed = embed
        self._count_tokens = tokenizer_count
        self._pulled = {wire.canonical_name(model.name) for model in self.models}

    def _protocol_app(self) -> ASGIApp:
        routes = [
            Route("/", self._root, methods=["GET"]),
            Route("/api/version", self._version, methods=["GET"]),
            Route("/api/tags", self._tags, methods=["GET"]),
            Route("/api/embed", self._embed_route, methods=["POST"]),
            Route("/api/embeddings", self._legacy_route, methods=["POST"]),
        ]
        return Starlette(routes=routes, exception_handlers={HTTPException: _gin_router_error})

    async def _root(self, request: Request) -> Response:
        return wire.running()

    async def _version(self, request: Request) -> Response:
        return wire.GinJSONResponse({"version": self.version})

    async def _tags(self, request: Request) -> Response:
        newest_first = sorted(self.models, key=lambda model: model.modified_at, reverse=True)
        return wire.GinJSONResponse({"models": [model.tag() for model in newest_first]})

    async def _embed_route(self, request: Request) -> Response:
        started_ns = time.perf_counter_ns()
        setting = fault_of(request)
        if setting.fault is Fault.LEGACY_ONLY:
            return wire.gin_text(wire.NOT_FOUND, 404)
        body = await _bound_body(request, _EMBED_FIELDS, "api.EmbedRequest")
        if isinstance(body, Response):
            return body
        model = body.get("model") or ""
        assert isinstance(model, str)
        if not model:
            return wire.error(f"model '{model}' not found", 404)
        texts = wire.input_texts(body.get("input"))
        if texts is None:
            return wire.error("invalid input type", 400)
        if refusal := self._unservable(model, setting):
            return refusal
        loaded_ns = time.perf_counter_ns()
        if not texts:
            return wire.GinJSONResponse({"model": model, "embeddings": []})
        context = self._context(body.get("options"))
        counts = await self.call_model(self._count_tokens, texts)
        if body.get("truncate") is False and max(counts) > context:
            return wire.error(wire.INPUT_TOO_LONG, 400)
        vectors = unit_rows(await self._vectors(texts, setting))
        dimensions = body.get("dimensions")
        if isinstance(dimensions, int) and 0 < dimensions < vectors.shape[1]:
            vectors = unit_rows(np.ascontiguousarray(vectors[:, :dimensions]))
        answer: dict[str, JSON] = {
            "model": model,
            "embeddings": [float32_json(vector) for vector in vectors],
            "total_duration": max(time.perf_counter_ns() - started_ns, 1),
            "load_duration": max(loaded_ns - started_ns, 1),
            "prompt_eval_count": sum(min(count, context) for count in counts),
        }
        return wire.GinJSONResponse(answer)

    async def _legacy_route(self, request: Request) -> Response:
        body = await _bound_body(request, _LEGACY_FIELDS, "api.EmbeddingRequest")
        if isinstance(body, Response):
            return body
        model, prompt = body.get("model") or "", body.get("prompt") or ""
        assert isinstance(model, str) and isinstance(prompt, str)
        if not model:
            return wire.error("model is required", 400)
        setting = fault_of(request)
        if refusal := self._unservable(model, setting):
            return refusal
        if not prompt:
            return wire.GinJSONResponse({"embedding": []})
        [count] = await self.call_model(self._count_tokens, [prompt])
        if count > self._context(body.get("options")):
            return wire.error(wire.INPUT_TOO_LONG, 500)
        [vector] = await self._vectors([prompt], setting)
        embedding: list[JSON] = list(vector.astype(np.float64).tolist())
        return wire.GinJSONResponse({"embedding": embedding})

    def _unservable(self, model: str, setting: FaultSetting) -> Response | None:
        """What scheduling the runner answers: not pulled (404) or a dead runner (500)."""
        if wire.canonical_name(model) not in self._pulled:
            return wire.model_not_found(model)
        if setting.fault is Fault.ERROR_500:
            return wire.error(wire.RUNNER_TERMINATED, 500)
        return None

    def _context(self, options: JSON) -> int:
        requested = options.get("num_ctx") if isinstance(options, dict) else None
        if isinstance(requested, int) and 0 < requested < self.num_ctx:
            return requested
        return self.num_ctx

    async def _vectors(self, texts: list[str], setting: FaultSetting) -> Vectors:
        return apply_vector_fault(await self.call_model(self._embed, texts), setting)


async def _bound_body(
    request: Request, fields: Sequence[tuple[str, str]], struct: str
) -> dict[str, JSON] | Response:
    """gin's `ShouldBindJSON` into `struct`: the body as a dict, or Ollama's 400 for it."""
    raw = await request.body()
    if not raw.strip():
        return wire.error("missing request body", 400)
    try:
        body: JSON = json.loads(raw)
    except json.JSONDecodeError as failure:
        return wire.go_syntax_error(failure)
    if not isinstance(body, dict):
        kind = "array" if isinstance(body, list) else "string"
        return wire.error(f"json: cannot unmarshal {kind} into Go value of type {struct}", 400)
    for name, go_type in fields:
        if mistyped := wire.go_type_error(body.get(name), name, go_type, struct.split(".")[-1]):
            return mistyped
    return body


async def _gin_router_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    if error.status_code == 405:
        return wire.gin_text(wire.METHOD_NOT_ALLOWED, 405)
    return wire.gin_text(wire.NOT_FOUND, 404)
