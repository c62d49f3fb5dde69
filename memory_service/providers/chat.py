"""One client for every chat provider: all of them speak OpenAI's `/chat/completions`.

Paths: `vllm` and `ollama` are configured by their server root and answer under `/v1`
(vLLM's and Ollama's OpenAI-compatible routes); cloud kinds are configured by their API base
(Groq `.../openai/v1`, Gemini `.../v1beta/openai`), which already ends where OpenAI's `/v1` does.

Probes are real requests that prove the configured model can be served:
- vllm: `GET {root}/health` (the server root, not `/v1/health`), then `GET /v1/models`;
- ollama: `GET {root}/api/tags` (the model must be pulled);
- clouds: `GET {base}/models` with the key (a bad key or an unknown model fails here, before a
  user's request does). Gemini lists ids as `models/<name>`, so both spellings match.

An Ollama too old for `/v1/chat/completions` (gin's plain `404 page not found`) is spoken to
through its native `/api/chat` instead, translated both ways (providers.ollama_chat).

Failures map onto the provider error tree (providers.errors): 5xx, timeouts, refused and
dropped connections, 401/403/429 and an unknown model are ProviderUnavailable (fail over); any
other 4xx is the request's fault, ProviderInputError carrying the upstream status (relayed to
the client, never retried elsewhere). A stream that breaks after its first byte raises
ProviderServerError from the iterator: by then the client has the stream and gets an error
event, not a second provider's answer spliced in.
"""

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx

from memory_service.providers import ollama_chat
from memory_service.providers.config import ChatProviderConfig
from memory_service.providers.errors import ProviderBadResponse, ProviderModelNotFound
from memory_service.providers.http import (
    raise_for_status,
    redact,
    route_missing,
    send,
    transport_error,
)

JSONObject = dict[str, Any]


class ChatClient:
    def __init__(self, config: ChatProviderConfig, http: httpx.AsyncClient) -> None:
        self.config = config
        self.name = config.name
        self._http = http
        self._timeouts = httpx.Timeout(config.read_timeout, connect=config.connect_timeout)
        # A probe waits for a health check or a model list, never for a completion.
        self._probe_timeouts = httpx.Timeout(config.probe_timeout, connect=config.connect_timeout)
        root = config.base_url.rstrip("/")
        self._root = root
        self._api = f"{root}/v1" if config.kind in ("vllm", "ollama") else root
        self._headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self.native = False  # Ollama without OpenAI-compatible routes: use /api/chat

    async def probe(self) -> None:
        """Prove the server is up and serves `config.model`; raise ProviderError otherwise."""
        if self.config.kind == "ollama":
            body = await self._get_json(f"{self._root}/api/tags")
            names = [str(m.get("name")) for m in body.get("models", []) if isinstance(m, dict)]
        else:
            if self.config.kind == "vllm":
                response = await self._send("GET", f"{self._root}/health", probe=True)
                raise_for_status(self.name, response)
            body = await self._get_json(f"{self._api}/models")
            names = [str(m.get("id")) for m in body.get("data", []) if isinstance(m, dict)]
        model = self.config.model
        if model not in names and f"models/{model}" not in names:
            raise ProviderModelNotFound(self.name, f"model {model!r} is not served (has {names})")

    async def aclose(self) -> None:
        """Close the HTTP client it was given: the factory gives each provider its own."""
        await self._http.aclose()

    async def complete(self, payload: JSONObject) -> JSONObject:
        """A non-streamed completion: the provider's JSON body (OpenAI's shape)."""
        if not self.native:
            response = await self._send("POST", f"{self._api}/chat/completions", payload)
            if not self._switched_to_native(response):
                raise_for_status(self.name, response)
                body = _json(self.name, response)
                if not isinstance(body.get("choices"), list):
                    raise ProviderBadResponse(self.name, "a chat completion without `choices`")
                return body
        native = ollama_chat.native_request(self.name, payload, self.config.keep_alive)
        response = await self._send("POST", f"{self._root}/api/chat", native)
        raise_for_status(self.name, response)
        return ollama_chat.completion(self.name, _json(self.name, response))

    @contextlib.asynccontextmanager
    async def stream(self, payload: JSONObject) -> AsyncIterator[AsyncIterator[str]]:
        """Open a streamed completion. Failing to open raises (fail over is still possible);
        once open, the iterator yields each SSE event's `data` (`[DONE]` included)."""
        async with contextlib.AsyncExitStack() as stack:
            if not self.native:
                url = f"{self._api}/chat/completions"
                response = await self._open(stack, url, payload)
                if response.status_code >= 300:
                    await response.aread()
                if not self._switched_to_native(response):
                    raise_for_status(self.name, response)
                    yield self._events(response, url)
                    return
            url = f"{self._root}/api/chat"
            native = ollama_chat.native_request(self.name, payload, self.config.keep_alive)
            response = await self._open(stack, url, native)
            if response.status_code >= 300:
                await response.aread()
                raise_for_status(self.name, response)
            include_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
            yield ollama_chat.chunk_events(self.name, self._lines(response, url), include_usage)

    def _switched_to_native(self, response: httpx.Response) -> bool:
        if self.config.kind == "ollama" and route_missing(response):
            self.native = True
        return self.native

    async def _open(
        self, stack: contextlib.AsyncExitStack, url: str, payload: JSONObject
    ) -> httpx.Response:
        request = self._http.build_request(
            "POST", url, json=payload, headers=self._headers, timeout=self._timeouts
        )
        try:
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise transport_error(self.name, url, exc) from exc
        stack.push_async_callback(response.aclose)
        return response

    async def _events(self, response: httpx.Response, url: str) -> AsyncIterator[str]:
        async for line in self._lines(response, url):
            if line.startswith("data:"):
                yield line[5:].removeprefix(" ")

    async def _lines(self, response: httpx.Response, url: str) -> AsyncIterator[str]:
        try:
            async for line in response.aiter_lines():
                yield line
        except httpx.HTTPError as exc:
            raise transport_error(self.name, url, exc) from exc

    async def _get_json(self, url: str) -> JSONObject:
        """Used by probes only."""
        response = await self._send("GET", url, probe=True)
        raise_for_status(self.name, response)
        return _json(self.name, response)

    async def _send(
        self, method: str, url: str, payload: JSONObject | None = None, probe: bool = False
    ) -> httpx.Response:
        return await send(
            self._http,
            self.name,
            method,
            url,
            timeouts=self._probe_timeouts if probe else self._timeouts,
            payload=payload,
            headers=self._headers,
        )


def _json(provider: str, response: httpx.Response) -> JSONObject:
    try:
        body = response.json()
    except ValueError as exc:
        raise ProviderBadResponse(provider, f"not JSON: {redact(response.text)!r}") from exc
    if not isinstance(body, dict):
        raise ProviderBadResponse(provider, f"expected a JSON object, got {type(body).__name__}")
    return body
