"""Request coalescing: concurrent embed calls become one provider call.

Callers of `embed` within `window_seconds` of the first one share a flush, up to
`max_batch` texts (a flush starts at once when that many are waiting). At most
`max_in_flight` flushes run at a time; callers arriving meanwhile wait and go together in
the next flush as soon as one returns, so under load batches grow by themselves (as group
commit does), while an idle service pays at most the window. Identical texts in a flush are
embedded once. Each caller gets its own vectors back, in its own order, or the flush's
error. A single call of `max_batch` texts or more is passed through on its own.

Bounded: a flush never holds more than `max_batch` texts (callers stay whole; the rest go
in the next flush), at most `max_waiting` texts wait, and a caller that would pass that
bound gets EmbedQueueFull at once (its store stays pending, its search answers 503
`overloaded`); `max_waiting` is at least `max_batch`. A caller that gives up while waiting
(a client that disconnected, a store past its inline bound) leaves the queue at once: its
texts are never embedded and its room is free.
"""

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from memory_service.embeddings.port import Embedder, Embedding
from memory_service.embeddings.spaces import EmbeddingSpace
from memory_service.providers.embedding import Tokenizer
from memory_service.providers.errors import EmbedQueueFull, ProviderInputError


@dataclass
class _Waiting:
    texts: list[str]
    future: asyncio.Future[Embedding]


class CoalescingEmbedder:
    def __init__(
        self,
        inner: Embedder,
        window_seconds: float,
        max_batch: int,
        max_in_flight: int = 1,
        max_waiting: int | None = None,
    ) -> None:
        self.inner = inner
        self.max_in_flight = max_in_flight
        # Default: a few flushes' worth, so a burst is absorbed but never grows without end.
        self.max_waiting = max(max_waiting or 4 * max_batch, max_batch)
        self._in_flight = 0
        self.max_batch = max_batch
        self.window_seconds = window_seconds
        self._waiting: list[_Waiting] = []
        self._waiting_texts = 0
        self._timer: asyncio.TimerHandle | None = None
        self._flushes: set[asyncio.Task[None]] = set()

    @property
    def space(self) -> EmbeddingSpace:
        return self.inner.space

    @property
    def depth(self) -> int:
        """Texts waiting for a flush now."""
        return self._waiting_texts

    @property
    def window(self) -> int | None:
        return self.inner.window

    async def embed(self, texts: Sequence[str]) -> Embedding:
        if not texts or len(texts) >= self.max_batch:
            return await self.inner.embed(texts)
        if self._waiting_texts + len(texts) > self.max_waiting:
            raise EmbedQueueFull(
                "coalescer",
                f"{self._waiting_texts} texts already wait for the embedder "
                f"(at most {self.max_waiting})",
            )
        loop = asyncio.get_running_loop()
        waiting = _Waiting(list(texts), loop.create_future())
        self._waiting.append(waiting)
        self._waiting_texts += len(texts)
        if self._waiting_texts >= self.max_batch:
            self._flush()
        elif self._timer is None and self._in_flight < self.max_in_flight:
            self._timer = loop.call_later(self.window_seconds, self._flush)
        try:
            return await waiting.future
        except asyncio.CancelledError:
            if waiting in self._waiting:  # not flushed yet: its room is free at once
                self._waiting.remove(waiting)
                self._waiting_texts -= len(waiting.texts)
            raise

    def _flush(self) -> None:
        """Send what waits, up to `max_batch` texts a flush, unless the in-flight limit is
        reached: a returning flush sends the rest."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._in_flight < self.max_in_flight:
            batch = self._take()
            if not batch:
                return
            self._in_flight += 1
            task = asyncio.create_task(self._embed_batch_of(batch))
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    def _take(self) -> list[_Waiting]:
        """The callers of the next flush, oldest first, within `max_batch` texts; callers
        who gave up are dropped on the way."""
        batch: list[_Waiting] = []
        texts = 0
        while self._waiting:
            waiting = self._waiting[0]
            if waiting.future.done():  # cancelled: its caller left
                self._waiting.pop(0)
                self._waiting_texts -= len(waiting.texts)
                continue
            if batch and texts + len(waiting.texts) > self.max_batch:
                break
            self._waiting.pop(0)
            self._waiting_texts -= len(waiting.texts)
            batch.append(waiting)
            texts += len(waiting.texts)
        return batch

    async def _embed_batch_of(self, batch: list[_Waiting]) -> None:
        try:
            await self._deliver(batch)
        finally:
            self._in_flight -= 1
            self._flush()  # whoever arrived during this call has waited long enough

    async def _deliver(self, batch: list[_Waiting]) -> None:
        unique = list(dict.fromkeys(text for waiting in batch for text in waiting.texts))
        try:
            embedding = await self.inner.embed(unique)
        except ProviderInputError as exc:
            if len(batch) > 1:
                await self._deliver_one_by_one(batch)  # one caller's bad text is its own
                return
            _fail(batch, exc)
            return
        except Exception as exc:
            _fail(batch, exc)
            return
        row_of = {text: row for row, text in enumerate(unique)}
        for waiting in batch:
            if not waiting.future.done():
                rows = [row_of[text] for text in waiting.texts]
                waiting.future.set_result(Embedding(embedding.vectors[rows], embedding.provider))

    async def _deliver_one_by_one(self, batch: list[_Waiting]) -> None:
        for waiting in batch:
            try:
                result = await self.inner.embed(waiting.texts)
            except Exception as exc:
                _fail([waiting], exc)
            else:
                if not waiting.future.done():
                    waiting.future.set_result(result)

    async def count_tokens(self, texts: Sequence[str]) -> list[int] | None:
        return await self.inner.count_tokens(texts)

    def tokenizer(self) -> Tokenizer | None:
        return self.inner.tokenizer()


def _fail(batch: list[_Waiting], exc: BaseException) -> None:
    for waiting in batch:
        if not waiting.future.done():
            waiting.future.set_exception(exc)
