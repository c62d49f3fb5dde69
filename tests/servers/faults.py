"""Fault switches and the request log every loopback server carries.

Both are written from the test thread and read from the server's event-loop thread, so each
guards its state with a lock and hands out immutable snapshots.

Faults come in two kinds:

- transport faults (`slow`, `hang`, `drop`) act on every request, on every route, before the
  protocol app sees it: a dead or overloaded server is dead for its health probe too;
- answer faults (`error_500`, `wrong_dimension`, `other_model`, `no_base64`, `legacy_only`) act on
  the embedding routes only, after request validation, the way a server whose engine died still
  validates and rejects bad requests. Each server documents exactly where it applies them.

One fault is active at a time; setting another replaces it. The snapshot is taken once per
request, when the request arrives, so switching mid-request never tears an answer.
"""

import enum
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

JSON = dict[str, "JSON"] | list["JSON"] | str | int | float | bool | None


class Fault(enum.Enum):
    OK = "ok"
    ERROR_500 = "error_500"
    SLOW = "slow"
    HANG = "hang"
    DROP = "drop"
    WRONG_DIMENSION = "wrong_dimension"
    OTHER_MODEL = "other_model"
    NO_BASE64 = "no_base64"
    SHUFFLED = "shuffled"
    LEGACY_ONLY = "legacy_only"
    RATE_LIMITED = "rate_limited"
    STREAM_BREAK = "stream_break"
    STREAM_ERROR = "stream_error"
    STREAM_STALL = "stream_stall"


TRANSPORT_FAULTS = frozenset({Fault.SLOW, Fault.HANG, Fault.DROP})


@dataclass(frozen=True)
class FaultSetting:
    """The fault in force: `delay_seconds` matters for SLOW, `dimension` for WRONG_DIMENSION."""

    fault: Fault = Fault.OK
    delay_seconds: float = 0.0
    dimension: int = 100


class FaultSwitch:
    """Thread-safe switch, settable at any moment from any thread.

    `server.faults.hang()` makes the next requests hang; `server.faults.ok()` heals the server.
    """

    supported: ClassVar[frozenset[Fault]] = frozenset(
        {
            Fault.OK,
            Fault.ERROR_500,
            Fault.SLOW,
            Fault.HANG,
            Fault.DROP,
            Fault.WRONG_DIMENSION,
            Fault.OTHER_MODEL,
        }
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._setting = FaultSetting()

    def current(self) -> FaultSetting:
        with self._lock:
            return self._setting

    def set(self, setting: FaultSetting) -> None:
        if setting.fault not in self.supported:
            raise ValueError(f"{type(self).__name__} does not emulate {setting.fault.value}")
        with self._lock:
            self._setting = setting

    def ok(self) -> None:
        """Answer every request correctly."""
        self.set(FaultSetting())

    def error_500(self) -> None:
        """Answer embedding requests with the server's real 500 body."""
        self.set(FaultSetting(Fault.ERROR_500))

    def slow(self, seconds: float) -> None:
        """Wait `seconds` before handling each request, then answer it correctly."""
        if seconds < 0:
            raise ValueError("a delay cannot be negative")
        self.set(FaultSetting(Fault.SLOW, delay_seconds=seconds))

    def hang(self) -> None:
        """Accept requests and never answer; released (connection closed) when the server stops."""
        self.set(FaultSetting(Fault.HANG))

    def drop(self) -> None:
        """Read each request, then close the TCP connection without any HTTP response."""
        self.set(FaultSetting(Fault.DROP))

    def wrong_dimension(self, dimension: int = 100) -> None:
        """Answer with unit vectors of `dimension` components (truncated or zero-padded)."""
        if dimension < 1:
            raise ValueError("a dimension must be positive")
        self.set(FaultSetting(Fault.WRONG_DIMENSION, dimension=dimension))

    def other_model(self) -> None:
        """Answer normally, with unit vectors that are not the served model's."""
        self.set(FaultSetting(Fault.OTHER_MODEL))


class OpenAIFaults(FaultSwitch):
    supported = FaultSwitch.supported | {Fault.NO_BASE64, Fault.SHUFFLED}

    def shuffled(self) -> None:
        """List `data` items in reverse order, each keeping its `index`: the OpenAI contract
        promises the index, not the order, and a client must place items by it."""
        self.set(FaultSetting(Fault.SHUFFLED))

    def no_base64(self) -> None:
        """Refuse `encoding_format: "base64"` the way vLLM 0.4.x did (see `vllm_wire`)."""
        self.set(FaultSetting(Fault.NO_BASE64))


class OllamaFaults(FaultSwitch):
    supported = FaultSwitch.supported | {Fault.LEGACY_ONLY}

    def legacy_only(self) -> None:
        """Behave like an Ollama older than 0.3.0: no `/api/embed` route, gin's plain 404."""
        self.set(FaultSetting(Fault.LEGACY_ONLY))


class ChatFaults(FaultSwitch):
    """Chat servers: `error_500` and `rate_limited` answer completions (and `/health`, for
    `error_500`) with the flavour's own body; the stream faults act after two content chunks."""

    supported = frozenset(
        {Fault.OK, Fault.ERROR_500, Fault.SLOW, Fault.HANG, Fault.DROP, Fault.LEGACY_ONLY}
        | {Fault.RATE_LIMITED, Fault.STREAM_BREAK, Fault.STREAM_ERROR, Fault.STREAM_STALL}
    )

    def legacy_only(self) -> None:
        """Ollama flavour: behave like an Ollama older than 0.1.24, without `/v1` routes
        (gin's plain-text 404); its native `/api/chat` still answers."""
        self.set(FaultSetting(Fault.LEGACY_ONLY))

    def rate_limited(self) -> None:
        """Answer completions with the flavour's 429."""
        self.set(FaultSetting(Fault.RATE_LIMITED))

    def stream_break(self) -> None:
        """Stream two content chunks, then drop the connection mid-body (a crashed server)."""
        self.set(FaultSetting(Fault.STREAM_BREAK))

    def stream_error(self) -> None:
        """Stream two content chunks, then vLLM's in-stream error event and `[DONE]`."""
        self.set(FaultSetting(Fault.STREAM_ERROR))

    def stream_stall(self) -> None:
        """Stream two content chunks, then nothing more until the client leaves (a model
        that stopped generating, with the connection open)."""
        self.set(FaultSetting(Fault.STREAM_STALL))


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it, before any fault acted on it.

    `body` is the parsed JSON body, None when the body is empty or not JSON (`raw_body` keeps
    the bytes either way). `received_at` is `time.monotonic()` at arrival.
    """

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: JSON
    raw_body: bytes
    received_at: float = field(default_factory=time.monotonic)


class RequestLog:
    """Every request a server received, in arrival order; thread-safe and clearable."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._entries: list[RecordedRequest] = []

    def record(self, entry: RecordedRequest) -> None:
        with self._changed:
            self._entries.append(entry)
            self._changed.notify_all()

    def all(self) -> list[RecordedRequest]:
        with self._changed:
            return list(self._entries)

    def matching(self, path: str | None = None, method: str | None = None) -> list[RecordedRequest]:
        """The requests to `path` (exact) with `method` (case-insensitive), either may be None."""
        with self._changed:
            return [entry for entry in self._entries if _matches(entry, path, method)]

    def count(self, path: str | None = None, method: str | None = None) -> int:
        return len(self.matching(path, method))

    def clear(self) -> None:
        with self._changed:
            self._entries.clear()

    def wait_for(
        self, count: int, path: str | None = None, method: str | None = None, timeout: float = 10.0
    ) -> list[RecordedRequest]:
        """Block until at least `count` matching requests arrived; TimeoutError after `timeout`."""
        with self._changed:
            arrived = self._changed.wait_for(
                lambda: sum(_matches(e, path, method) for e in self._entries) >= count, timeout
            )
            if not arrived:
                raise TimeoutError(f"fewer than {count} requests to {path or 'any path'} arrived")
            return [entry for entry in self._entries if _matches(entry, path, method)]

    def __len__(self) -> int:
        with self._changed:
            return len(self._entries)


def _matches(entry: RecordedRequest, path: str | None, method: str | None) -> bool:
    return (path is None or entry.path == path) and (
        method is None or entry.method == method.upper()
    )
