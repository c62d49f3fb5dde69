"""Lanes: interactive work (a query, a single store) never waits for bulk work (ingestion,
the reconciler) wherever this process itself runs a model.

A caller marks bulk work with `bulk_lane()`; the lane travels in a context variable, so it
reaches the provider through any composition of embedders without a parameter. The
in-process model (`local.py`) sends each lane to threads of its own: interactive calls are
encoded on one thread, bulk ones on another, at the same time. Every call is submitted in
slices (`SLICE_CHARS`), so within a lane a query waits for at most one slice of a large
batch of stores. `PriorityWorker` is that thread: it takes the most urgent queued call next,
which matters where one thread serves both lanes (the tests' loopback embedders run the
model on the bulk thread). Remote providers are not affected: their server schedules its
own queue.

A call whose caller has gone (cancelled while queued) is dropped, never run.
"""

import asyncio
import contextlib
import enum
import itertools
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextvars import ContextVar
from typing import TypeVar

T = TypeVar("T")

# Characters (about 500 tokens) per call of an in-process model: what a call of the same
# lane may wait behind, 70 to 100 ms of one CPU thread. Two chunks of 256 tokens, or some
# twenty sentences: at that size batching no longer changes the rate on CPU
# (docs/benchmarks.md, "Model threads" and "Bulk writes").
SLICE_CHARS = 2_000


class Lane(enum.IntEnum):
    """Lower runs first."""

    INTERACTIVE = 0
    BULK = 1


_LANE: ContextVar[Lane] = ContextVar("embedding_lane", default=Lane.INTERACTIVE)
_STOP = 2  # after every lane: what was queued before `shutdown` still runs


def current_lane() -> Lane:
    return _LANE.get()


def slices(texts: Sequence[str]) -> Iterator[tuple[int, list[str]]]:
    """(start, texts) runs of consecutive texts of about SLICE_CHARS characters each
    (a run ends once it reaches that; a longer text is a run of its own)."""
    start, run, chars = 0, [], 0
    for index, text in enumerate(texts):
        run.append(text)
        chars += len(text)
        if chars >= SLICE_CHARS:
            yield start, run
            start, run, chars = index + 1, [], 0
    if run:
        yield start, run


@contextlib.contextmanager
def bulk_lane() -> Iterator[None]:
    """Mark the model calls made inside (in this task and tasks it starts) as bulk work."""
    token = _LANE.set(Lane.BULK)
    try:
        yield
    finally:
        _LANE.reset(token)


class PriorityWorker:
    """One thread running submitted calls, most urgent lane first, in order within a lane."""

    def __init__(self, name: str) -> None:
        self._queue: queue.PriorityQueue[
            tuple[int, int, Callable[[], object] | None, Future[object] | None]
        ] = queue.PriorityQueue()
        self._order = itertools.count()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    async def run(self, call: Callable[[], T], lane: Lane | None = None) -> T:
        """`call()` on this worker's thread, in `lane` (default: the caller's)."""
        return await asyncio.wrap_future(self.submit(call, lane))

    def submit(self, call: Callable[[], T], lane: Lane | None = None) -> "Future[T]":
        """Queue `call()` in `lane` (default: the caller's); its future. After `shutdown`
        the future fails at once with RuntimeError: nothing would ever run it."""
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                future.set_exception(RuntimeError(f"{self._thread.name} is shut down"))
                return future
            priority = current_lane() if lane is None else lane
            self._queue.put((priority, next(self._order), call, future))  # type: ignore[arg-type]
        return future

    def shutdown(self) -> None:
        """Refuse new calls, run those already queued, and wait for the thread."""
        with self._lock:
            self._closed = True
            self._queue.put((_STOP, next(self._order), None, None))
        self._thread.join()

    def _serve(self) -> None:
        while True:
            _, _, call, future = self._queue.get()
            if call is None or future is None:
                return
            if not future.set_running_or_notify_cancel():
                continue  # its caller went away while it was queued
            try:
                future.set_result(call())
            except BaseException as exc:
                future.set_exception(exc)
