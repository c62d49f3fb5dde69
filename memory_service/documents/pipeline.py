"""Batch ingestion: documents in, chunks with vectors out, idempotent and resumable.

Documents are read in groups (`_groups`), and one query looks up what the namespace holds
of a whole group. For each document: hash its text; if the namespace already holds that
source with the same hash and chunking, skip it (re-ingesting unchanged input is a no-op).
Otherwise chunk it with the space's own tokenizer, and collect chunks until a batch is full.
A batch is embedded in one call (the provider splits by its own batch size), then written in
one transaction of a constant number of round trips (`repository.replace_documents`: one
upsert of all its documents, one delete of their old chunks, one binary COPY of the new
ones), so a changed document's chunks are replaced at once. A run that is interrupted keeps
every batch it committed; the next run skips those documents and goes on: resumable, no
duplicates. A source seen twice in one run ends as its last text, as if the documents had
been ingested one by one.

Unlike a memory, a document is not committed before it is embedded: the source stays on
disk, so a batch whose embedding fails is reported and ingested again by the next run.
"""

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy.ext.asyncio import AsyncEngine

from memory_service.core.access import NOBODY, Actor
from memory_service.core.errors import EmbedderUnavailable, InputRejected, InvalidRequest
from memory_service.core.limits import at_most, metadata_bytes
from memory_service.core.settings import Limits
from memory_service.documents import repository
from memory_service.documents.chunking import Chunk, chunk_text
from memory_service.documents.loaders import LoadedDocument, LoaderError
from memory_service.documents.repository import NewDocument
from memory_service.documents.schemas import MAX_DOCUMENT_CHARS, DocumentOut
from memory_service.embeddings.port import Embedder, VectorOrRefusal, embed_each
from memory_service.embeddings.spaces import EmbeddingSpace
from memory_service.providers.embedding import CountTokens, Tokenizer
from memory_service.providers.errors import ProviderError, ProviderInputError
from memory_service.providers.lanes import bulk_lane

log = logging.getLogger(__name__)

# Bump when `chunking.chunk_text` would cut the same text differently: stored documents are
# then re-chunked on their next ingest, unchanged or not.
CHUNKER_VERSION = 1


@dataclass
class IngestReport:
    documents: int = 0
    ingested: int = 0
    unchanged: int = 0
    chunks: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def chunks_per_second(self) -> float:
        return self.chunks / self.seconds if self.seconds else 0.0


@dataclass
class _Pending:
    document: LoadedDocument
    content_hash: bytes
    chunks: list[Chunk]


Progress = Callable[[IngestReport], None]


@dataclass(kw_only=True)
class Ingestor:
    engine: AsyncEngine
    embedder: Embedder
    chunk_tokens: int
    overlap_tokens: int
    batch_chunks: int = 512
    # Chunks are counted by the embedder's own tokenizer when it has one (a local provider of
    # the space's model), else by this one (`embeddings.tokenizer.FileTokenizer`).
    tokenizer: Tokenizer | None = None
    # What `ingest_one` (`POST /v1/documents`) checks a document against.
    limits: Limits

    @property
    def space(self) -> EmbeddingSpace:
        """The space of every vector this service writes or searches: its embedder's."""
        return self.embedder.space

    def __post_init__(self) -> None:
        tokenizer = self.embedder.tokenizer() or self.tokenizer
        if tokenizer is None:
            raise InvalidRequest(
                f"chunking needs {self.space.model}'s tokenizer in this process; declare a "
                "local provider of that model for the space, or set MEMORY_TOKENIZER_PATH to "
                "a folder holding the model's tokenizer.json"
            )
        if self.chunk_tokens > tokenizer.window:
            raise InvalidRequest(
                f"chunks of {self.chunk_tokens} tokens exceed the model's window of "
                f"{tokenizer.window}"
            )
        self._tokenizer: Tokenizer = tokenizer

    @property
    def chunking(self) -> str:
        """What the stored chunks were made with; a change re-chunks unchanged documents."""
        return (
            f"{self.space.model};chunker={CHUNKER_VERSION};tokens={self.chunk_tokens};"
            f"overlap={self.overlap_tokens}"
        )

    async def ingest(
        self,
        items: Iterable[LoadedDocument | LoaderError],
        namespace: str,
        progress: Progress | None = None,
        *,
        raise_unavailable: bool = False,
        actor: Actor = NOBODY,
    ) -> IngestReport:
        """Ingest `items` batch by batch. A batch the embedder could not take is reported as
        failed documents and the run goes on, unless `raise_unavailable`: then the
        ProviderError propagates and the run stops there (batches before it stay committed),
        for callers that retry the whole run later (ingestion jobs).

        Chunking and embedding run in the bulk lane (`providers.lanes`): an in-process
        model encodes queries and single stores on another thread meanwhile."""
        with bulk_lane():
            return await self._ingest(items, namespace, progress, raise_unavailable, actor)

    async def _ingest(
        self,
        items: Iterable[LoadedDocument | LoaderError],
        namespace: str,
        progress: Progress | None,
        raise_unavailable: bool,
        actor: Actor,
    ) -> IngestReport:
        report = IngestReport()
        started = time.perf_counter()
        batch: dict[str, _Pending] = {}

        async def flush() -> None:
            await self._write(list(batch.values()), namespace, report, raise_unavailable, actor)

        groups = _groups(items, self.batch_chunks, self.batch_chunks * self.chunk_tokens * 16)
        async for group in groups:
            versions = await self._stored_versions(namespace, group)
            # What this run queued since: the lookup above could not see it yet.
            versions.update({uri: pending.content_hash for uri, pending in batch.items()})
            for item in group:
                report.documents += 1
                pending = await self._prepare(item, versions, report)
                if pending is not None:
                    uri = pending.document.source_uri
                    if uri in batch:  # a repeat: its earlier text goes first, as in a sequence
                        await flush()
                        batch = {}
                    batch[uri] = pending
                    versions[uri] = pending.content_hash
                if sum(len(p.chunks) for p in batch.values()) >= self.batch_chunks:
                    await flush()
                    batch = {}
                report.seconds = time.perf_counter() - started
                if progress is not None:
                    progress(report)
        await flush()
        report.seconds = time.perf_counter() - started
        return report

    async def _stored_versions(
        self, namespace: str, group: Sequence[LoadedDocument | LoaderError]
    ) -> dict[str, bytes]:
        """The content hash of each document of `group` stored with this chunking: one query."""
        uris = [item.source_uri for item in group if isinstance(item, LoadedDocument)]
        async with self.engine.connect() as conn:
            stored = await repository.stored_versions(conn, namespace, uris)
        return {
            uri: hash_ for uri, (hash_, chunking) in stored.items() if chunking == self.chunking
        }

    async def _prepare(
        self, item: LoadedDocument | LoaderError, versions: dict[str, bytes], report: IngestReport
    ) -> _Pending | None:
        """The document chunked, or None when it failed to load or is stored unchanged."""
        if isinstance(item, LoaderError):
            report.failed.append((item.source_uri, str(item)))
            return None
        content_hash = hashlib.sha256(item.text.encode()).digest()
        if versions.get(item.source_uri) == content_hash:
            report.unchanged += 1
            return None
        chunks = await self._tokenizer.run_with_counter(self._chunker(item.text))
        return _Pending(item, content_hash, chunks)

    def _chunker(self, text: str) -> Callable[[CountTokens], list[Chunk]]:
        def work(count_tokens: CountTokens) -> list[Chunk]:
            return chunk_text(
                text, count_tokens, max_tokens=self.chunk_tokens, overlap_tokens=self.overlap_tokens
            )

        return work

    async def _write(
        self,
        batch: list[_Pending],
        namespace: str,
        report: IngestReport,
        raise_unavailable: bool,
        actor: Actor,
    ) -> None:
        if not batch:
            return
        texts = [chunk.text for pending in batch for chunk in pending.chunks]
        try:
            results = await embed_each(self.embedder, texts)
        except ProviderError as exc:
            if raise_unavailable:
                raise
            report.failed += [(p.document.source_uri, f"not embedded: {exc}") for p in batch]
            return
        documents, position = [], 0
        for pending in batch:
            own = results[position : position + len(pending.chunks)]
            position += len(pending.chunks)
            refused = [r for r in own if isinstance(r, ProviderInputError)]
            if refused:
                report.failed.append((pending.document.source_uri, f"refused: {refused[0]}"))
                continue
            documents.append(_new_document(pending, own))
        async with self.engine.begin() as conn:
            report.chunks += await repository.replace_documents(
                conn, namespace, self.space.id, self.chunking, documents, actor
            )
        report.ingested += len(documents)

    async def ingest_one(
        self, document: LoadedDocument, namespace: str, actor: Actor = NOBODY
    ) -> DocumentOut:
        """Ingest one document now. Raises LimitExceeded for a text or metadata over the
        limits, EmbedderUnavailable or InputRejected when it could not be embedded (nothing
        is written then)."""
        at_most("text", len(document.text), MAX_DOCUMENT_CHARS)
        at_most(
            "metadata",
            metadata_bytes(document.metadata),
            self.limits.max_metadata_bytes,
            "bytes as JSON",
        )
        try:
            report = await self.ingest([document], namespace, raise_unavailable=True, actor=actor)
        except ProviderError as exc:
            raise EmbedderUnavailable(
                f"not embedded: {exc}", {"source_uri": document.source_uri}
            ) from exc
        if report.failed:
            _, error = report.failed[0]  # the only document, refused by the embedder
            raise InputRejected(error, {"source_uri": document.source_uri})
        async with self.engine.connect() as conn:
            stored = await repository.stored_document(conn, namespace, document.source_uri)
        assert stored is not None
        return DocumentOut.model_validate(
            {
                "id": stored.id,
                "source_uri": document.source_uri,
                "status": "ingested" if report.ingested else "unchanged",
                "chunks": stored.chunk_count,
                **stored.audit,
            }
        )

    async def prune(self, namespace: str, folder_uris: list[str], seen: set[str]) -> list[str]:
        async with self.engine.begin() as conn:
            return await repository.prune(conn, namespace, folder_uris, seen)


async def _groups(
    items: Iterable[LoadedDocument | LoaderError], size: int, max_chars: int
) -> AsyncIterator[list[LoadedDocument | LoaderError]]:
    """`items` in groups that one lookup covers: up to `size` items, or fewer holding
    `max_chars` characters of text. A batch of `size` chunks holds at most `size` documents
    that have chunks, and `max_chars` (16 characters per token of a batch) is text for
    several batches, so a group serves at least one batch in practice, while the text read
    ahead stays bounded.

    Each item is drawn in a worker thread: a loader reads and parses files (HTML can take
    seconds), and that must never run on the event loop that serves requests."""
    iterator = iter(items)
    group: list[LoadedDocument | LoaderError] = []
    chars = 0
    while (item := await asyncio.to_thread(next, iterator, None)) is not None:
        group.append(item)
        chars += len(item.text) if isinstance(item, LoadedDocument) else 0
        if len(group) >= size or chars >= max_chars:
            yield group
            group, chars = [], 0
    if group:
        yield group


def _new_document(pending: _Pending, vectors: Sequence[VectorOrRefusal]) -> NewDocument:
    document = pending.document
    return NewDocument(
        source_uri=document.source_uri,
        title=document.title,
        metadata=dict(document.metadata),
        content_hash=pending.content_hash,
        chunks=[(chunk.text, chunk.token_count) for chunk in pending.chunks],
        vectors=np.stack([vector for vector in vectors if not isinstance(vector, Exception)])
        if vectors
        else np.empty((0, 0), dtype=np.float32),
    )
