"""Serve an ASGI app with uvicorn on 127.0.0.1, in a background thread with its own event loop.

`LoopbackServer` is the base of every fake provider. It binds a socket to an OS-chosen free
port before starting (so `url` is known at once), runs uvicorn's h11 protocol on a private loop
in a daemon thread, and is usable from sync pytest fixtures and from scripts alike:

    with OpenAICompatServer(embed, tokenizer_count=count) as server:
        httpx.get(f"{server.url}/health")

Start-up waits (bounded) on an event set by uvicorn's start-up; stop releases every held
request, asks uvicorn to exit and joins the thread (bounded). Nothing sleeps to synchronize.

In front of the protocol app sits a small ASGI layer that reads the whole body, records the
request in `requests` and applies the transport faults:

- `slow`: waits, then passes the request on; a stop during the wait closes the connection;
- `hang`: holds the request until the client goes away or the server stops, then closes the
  connection without a response, so a hung request never blocks shutdown;
- `drop`: aborts the TCP transport (close without any HTTP bytes), so the client sees
  `httpx.RemoteProtocolError` ("Server disconnected without sending a response").

The transport is found through a registry filled by a subclass of uvicorn's `H11Protocol`,
keyed by the client address, which is exactly the ASGI scope's `client`.
"""

import abc
import asyncio
import contextlib
import functools
import json
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Generic, Self, TypeVar

import uvicorn
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from tests.servers.faults import JSON, Fault, FaultSetting, FaultSwitch, RecordedRequest, RequestLog

_SCOPE_FAULT_KEY = "loopback.fault"
_START_TIMEOUT_SECONDS = 10.0
_T = TypeVar("_T")
FaultsT = TypeVar("FaultsT", bound=FaultSwitch, covariant=True)
ClientAddress = tuple[str, int]


def fault_of(request: Request) -> FaultSetting:
    """The fault snapshot taken when `request` arrived."""
    setting = request.scope.get(_SCOPE_FAULT_KEY, FaultSetting())
    assert isinstance(setting, FaultSetting)
    return setting


class _Uvicorn(uvicorn.Server):
    """uvicorn's server, signalling the starting thread once it listens (or failed to)."""

    def __init__(self, config: uvicorn.Config, ready: threading.Event) -> None:
        super().__init__(config)
        self._ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets=sockets)
        finally:
            self._ready.set()


def _tracking_protocol(registry: dict[ClientAddress, asyncio.Transport]) -> type[H11Protocol]:
    class TrackingH11Protocol(H11Protocol):
        # uvicorn narrows asyncio's BaseTransport to Transport the same way, with the same ignore.
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if self.client is not None:
                registry[self.client] = transport

        def connection_lost(self, exc: Exception | None) -> None:
            if self.client is not None:
                registry.pop(self.client, None)
            super().connection_lost(exc)

    return TrackingH11Protocol


class LoopbackServer(abc.ABC, Generic[FaultsT]):
    """A real HTTP server on 127.0.0.1 serving `_protocol_app()`, with faults and a request log."""

    def __init__(self, faults: FaultsT) -> None:
        self.faults: FaultsT = faults
        self.requests = RequestLog()
        self._transports: dict[ClientAddress, asyncio.Transport] = {}
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._uvicorn: _Uvicorn | None = None
        self._stopping: asyncio.Event | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._app: ASGIApp | None = None

    @abc.abstractmethod
    def _protocol_app(self) -> ASGIApp:
        """The app speaking the emulated protocol; built once per start."""

    @property
    def port(self) -> int:
        if self._socket is None:
            raise RuntimeError("the server is not running")
        port: int = self._socket.getsockname()[1]
        return port

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT`, without a trailing slash."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, port: int = 0) -> Self:
        """Listen on `port` (0: one the OS picks). A fixed port can be bound again at once
        after a killed server (SO_REUSEADDR), so a restarted server keeps its URL."""
        if self._thread is not None:
            raise RuntimeError("the server is already running")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(128)
        config = uvicorn.Config(
            self._asgi,
            http=_tracking_protocol(self._transports),
            ws="none",
            lifespan="off",
            interface="asgi3",
            proxy_headers=False,
            # None: leave the process's logging alone; uvicorn's loggers propagate to the root.
            log_config=None,
            timeout_graceful_shutdown=2,
        )
        ready = threading.Event()
        self._uvicorn = _Uvicorn(config, ready)
        self._socket, self._loop = sock, asyncio.new_event_loop()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="loopback-model")
        self._app = self._protocol_app()
        self._thread = threading.Thread(
            target=self._run, args=(self._uvicorn, sock), name=type(self).__name__, daemon=True
        )
        self._thread.start()
        if not ready.wait(_START_TIMEOUT_SECONDS) or not self._uvicorn.started:
            self.stop()
            raise RuntimeError(f"{type(self).__name__} did not start")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Release held requests, shut uvicorn down and join its thread; idempotent."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop already ended
            loop.call_soon_threadsafe(self._begin_stop)
        thread.join(timeout)
        if thread.is_alive():
            raise RuntimeError(f"{type(self).__name__} did not stop within {timeout} s")
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
        if self._socket is not None:
            self._socket.close()
        self._thread = self._loop = self._uvicorn = self._socket = self._executor = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    async def call_model(self, function: Callable[..., _T], *args: object) -> _T:
        """Run a blocking model call off the event loop, one at a time per server."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(function, *args))

    def _run(self, server: _Uvicorn, sock: socket.socket) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve(server, sock))
        finally:
            loop.close()

    async def _serve(self, server: _Uvicorn, sock: socket.socket) -> None:
        self._stopping = asyncio.Event()
        await server.serve(sockets=[sock])

    def _begin_stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True

    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self._app
        assert app is not None
        if scope["type"] != "http":
            return await app(scope, receive, send)
        body = await _read_body(receive)
        setting = self.faults.current()
        self.requests.record(_recorded(scope, body))
        if setting.fault is Fault.DROP:
            return await self._abort(scope, receive)
        if setting.fault in (Fault.HANG, Fault.SLOW):
            delay = setting.delay_seconds if setting.fault is Fault.SLOW else None
            if not await self._hold(receive, delay):
                return await self._abort(scope, receive)
        scope[_SCOPE_FAULT_KEY] = setting
        await app(scope, _replay(body, receive), send)

    async def _hold(self, receive: Receive, delay: float | None) -> bool:
        """Wait `delay` seconds (None: forever); False when the server stops or the client left."""
        assert self._stopping is not None
        stopping = asyncio.ensure_future(self._stopping.wait())
        leaving = asyncio.ensure_future(_disconnected(receive))
        done, pending = await asyncio.wait(
            {stopping, leaving}, timeout=delay, return_when=asyncio.FIRST_COMPLETED
        )
        for task in pending:
            task.cancel()
        return not done

    async def _abort(self, scope: Scope, receive: Receive) -> None:
        """Close the connection without an HTTP response and wait until uvicorn has seen it."""
        client = scope.get("client")
        transport = self._transports.get((client[0], client[1])) if client else None
        if transport is not None:
            transport.abort()
        await _disconnected(receive)


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that yields the already-read body once, then defers to the real one."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _recorded(scope: Scope, body: bytes) -> RecordedRequest:
    headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]}
    parsed: JSON = None
    if body:
        with contextlib.suppress(ValueError):
            parsed = json.loads(body)
    return RecordedRequest(
        method=scope["method"],
        path=scope["path"],
        query=scope.get("query_string", b"").decode("latin-1"),
        headers=headers,
        body=parsed,
        raw_body=body,
    )
