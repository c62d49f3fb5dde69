"""A loopback OpenAI-compatible chat server in four flavours: vLLM, Ollama, Groq, Gemini.

Wire shapes and their sources are in `chat_wire`. The "model" is deterministic: the answer is
`Reply from <model> to: <last user message>`, split on spaces, one word per stream chunk, so
tests can check relayed content exactly. Prompt tokens are counted as whitespace-separated
words plus four per message (the shape of real chat templates, not their numbers); a request
whose prompt plus `max_tokens` exceeds `context_window` gets the flavour's 400.

Checks run in the real servers' order: authentication (cloud flavours) -> JSON body ->
`messages` present and well-formed -> `temperature` in [0, 2] -> model name (404) -> context
length (400) -> answer faults (`error_500`, `rate_limited`) -> answer, streamed or not.
"""

import asyncio
import json
from collections.abc import AsyncIterator, Sequence

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from tests.servers import chat_wire
from tests.servers.chat_wire import Completion, Flavour
from tests.servers.faults import JSON, ChatFaults, Fault, FaultSetting
from tests.servers.runner import LoopbackServer, fault_of

STREAM_FAULT_AFTER_CHUNKS = 2


class UpstreamCrashed(RuntimeError):
    """Raised inside a streamed body: uvicorn then drops the connection mid-response."""


class ChatServer(LoopbackServer[ChatFaults]):
    def __init__(
        self,
        flavour: Flavour,
        served_models: str | Sequence[str],
        *,
        api_key: str | None = None,
        context_window: int = 4096,
    ) -> None:
        super().__init__(ChatFaults())
        self.flavour: Flavour = flavour
        self.served_models = (
            [served_models] if isinstance(served_models, str) else list(served_models)
        )
        self.api_key = api_key
        self.context_window = context_window
        self.prefix = chat_wire.PREFIXES[flavour]

    @property
    def base_url(self) -> str:
        """What a client configures: the root for local servers, the API prefix for clouds."""
        return self.url if self.flavour in ("vllm", "ollama") else f"{self.url}{self.prefix}"

    def _protocol_app(self) -> ASGIApp:
        routes = [
            Route(f"{self.prefix}/models", self._models, methods=["GET"]),
            Route(f"{self.prefix}/chat/completions", self._chat, methods=["POST"]),
        ]
        if self.flavour == "vllm":
            routes.append(Route("/health", self._health, methods=["GET"]))
        if self.flavour == "ollama":
            routes.append(Route("/api/tags", self._tags, methods=["GET"]))
            routes.append(Route("/api/version", self._version, methods=["GET"]))
            routes.append(Route("/api/chat", self._native_chat, methods=["POST"]))
        return Starlette(routes=routes)

    async def _health(self, request: Request) -> Response:
        return Response(status_code=503 if fault_of(request).fault is Fault.ERROR_500 else 200)

    async def _version(self, request: Request) -> Response:
        return JSONResponse({"version": "0.12.6"})

    async def _tags(self, request: Request) -> Response:
        models = [
            {"name": name, "model": name, "size": 1_321_098_329, "details": {"family": "llama"}}
            for name in self.served_models
        ]
        return JSONResponse({"models": models})

    async def _models(self, request: Request) -> Response:
        if refusal := self._auth_error(request):
            return refusal
        body = chat_wire.model_list(self.flavour, self.served_models, self.context_window)
        return JSONResponse(body)

    def _auth_error(self, request: Request) -> Response | None:
        if self.api_key is None:
            return None
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return chat_wire.bad_key(self.flavour)
        return None

    async def _native_chat(self, request: Request) -> Response:
        """Ollama's native chat: `{"error": "..."}` errors, NDJSON when streaming (the
        default when `stream` is absent), `prompt_eval_count`/`eval_count` for usage."""
        body = json.loads(await request.body())
        model, messages = body.get("model"), body.get("messages") or []
        if model not in self.served_models:
            error = f'model "{model}" not found, try pulling it first'
            return JSONResponse({"error": error}, status_code=404)
        if fault_of(request).fault is Fault.ERROR_500:
            return JSONResponse({"error": "llama runner process has terminated"}, 500)
        completion = _answer(model, messages)
        if body.get("stream", True):
            return StreamingResponse(_native_stream(completion), media_type="application/x-ndjson")
        return JSONResponse(_native_part(completion, " ".join(completion.words), done=True))

    async def _chat(self, request: Request) -> Response:
        if self.flavour == "ollama" and fault_of(request).fault is Fault.LEGACY_ONLY:
            return PlainTextResponse("404 page not found", status_code=404)
        if refusal := self._auth_error(request):
            return refusal
        try:
            body = json.loads(await request.body())
        except json.JSONDecodeError as error:
            return chat_wire.error_response(self.flavour, 400, f"invalid JSON: {error}")
        messages = body.get("messages") if isinstance(body, dict) else None
        if (
            not isinstance(messages, list)
            or not messages
            or not all(_well_formed(m) for m in messages)
        ):
            message = "messages: a non-empty list of {role, content} objects is required"
            return chat_wire.error_response(self.flavour, 400, message)
        temperature = body.get("temperature", 1)
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, int | float)
            or not 0 <= temperature <= 2
        ):
            message = f"temperature must be a number between 0 and 2, got {temperature!r}"
            return chat_wire.error_response(self.flavour, 400, message, "invalid_value")
        model = body.get("model")
        if model not in self.served_models:
            return chat_wire.unknown_model(self.flavour, str(model))
        completion = _answer(model, messages)
        requested = body.get("max_completion_tokens") or body.get("max_tokens") or 0
        if completion.prompt_tokens + int(requested) > self.context_window:
            return chat_wire.context_too_long(
                self.flavour, self.context_window, completion.prompt_tokens, int(requested)
            )
        setting = fault_of(request)
        if setting.fault is Fault.ERROR_500:
            return chat_wire.server_error(self.flavour)
        if setting.fault is Fault.RATE_LIMITED:
            return chat_wire.rate_limited(self.flavour)
        if not body.get("stream"):
            return JSONResponse(chat_wire.completion_body(completion))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return StreamingResponse(
            self._stream(completion, setting, include_usage), media_type="text/event-stream"
        )

    async def _stream(
        self, completion: Completion, setting: FaultSetting, include_usage: bool
    ) -> AsyncIterator[bytes]:
        yield chat_wire.chunk_event(completion, {"role": "assistant", "content": ""})
        for sent, word in enumerate(completion.words):
            if sent == STREAM_FAULT_AFTER_CHUNKS and setting.fault is Fault.STREAM_BREAK:
                raise UpstreamCrashed("the loopback server crashes mid-stream")
            if sent == STREAM_FAULT_AFTER_CHUNKS and setting.fault is Fault.STREAM_STALL:
                await asyncio.sleep(3600)  # cancelled when the client leaves or we stop
            if sent == STREAM_FAULT_AFTER_CHUNKS and setting.fault is Fault.STREAM_ERROR:
                yield chat_wire.sse(
                    chat_wire.error_body("vllm", 500, "EngineCore encountered an issue.")
                )
                yield chat_wire.DONE
                return
            text = word if sent == 0 else f" {word}"
            yield chat_wire.chunk_event(completion, {"content": text})
            await asyncio.sleep(0)  # one chunk per write, as a generating server sends them
        yield chat_wire.chunk_event(completion, {}, finish="stop")
        if include_usage:
            yield chat_wire.usage_event(completion)
        yield chat_wire.DONE


def _well_formed(message: JSON) -> bool:
    return (
        isinstance(message, dict)
        and isinstance(message.get("role"), str)
        and isinstance(message.get("content"), str | list)
    )


def _text(content: JSON) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict)]
        return " ".join(part for part in parts if isinstance(part, str))
    return ""


def _answer(model: str, messages: list[JSON]) -> Completion:
    texts = [_text(m.get("content")) for m in messages if isinstance(m, dict)]
    users = [
        _text(m.get("content")) for m in messages if isinstance(m, dict) and m.get("role") == "user"
    ]
    prompt_tokens = sum(len(text.split()) + 4 for text in texts)
    words = f"Reply from {model} to: {users[-1] if users else ''}".split()
    return Completion(chat_wire.new_id(), model, words, prompt_tokens)


def _native_part(completion: Completion, text: str, done: bool) -> dict[str, JSON]:
    part: dict[str, JSON] = {
        "model": completion.model,
        "created_at": "2026-11-22T12:00:00.000000Z",
        "message": {"role": "assistant", "content": text},
        "done": done,
    }
    if done:
        part |= {
            "done_reason": "stop",
            "total_duration": 1_000_000,
            "prompt_eval_count": completion.prompt_tokens,
            "eval_count": len(completion.words),
        }
    return part


async def _native_stream(completion: Completion) -> AsyncIterator[bytes]:
    for sent, word in enumerate(completion.words):
        text = word if sent == 0 else f" {word}"
        yield (json.dumps(_native_part(completion, text, done=False)) + "\n").encode()
        await asyncio.sleep(0)
    yield (json.dumps(_native_part(completion, "", done=True)) + "\n").encode()
