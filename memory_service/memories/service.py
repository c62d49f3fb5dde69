"""Memory use cases. Durable first: a memory is committed before it is embedded.

A write runs as two transactions. The first stores the rows as `pending` and commits, so
the write survives any embedder failure; the second attaches the vectors. If the embedder
fails in between, the rows stay `pending` (and the response says so) until the reconciler
embeds them. Vector search reads only `embedded` rows.

Text longer than the model's token window is never truncated. Where the service can count
the model's tokens itself (a local model of the space), it is rejected with 422
`input_too_long` before anything is stored. Where only a remote server knows its limit, the
memory is stored, the server refuses the text, and the memory becomes `failed` with the
server's message in `last_error`, in the response as well.
"""

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeGuard
from uuid import UUID

import numpy as np
from sqlalchemy.ext.asyncio import AsyncEngine

from memory_service.core.access import EVERY_NAMESPACE, NOBODY, Actor, Namespaces
from memory_service.core.cursor import check_page_size, decode_cursor, page_of
from memory_service.core.db import failure_text
from memory_service.core.errors import (
    Conflict,
    NotFound,
)
from memory_service.core.limits import at_most, metadata_bytes, within_window
from memory_service.core.settings import Limits
from memory_service.embeddings.port import Embedder, VectorOrRefusal, embed_each
from memory_service.embeddings.spaces import EmbeddingSpace
from memory_service.memories import repository
from memory_service.memories.repository import PendingText, content_hash
from memory_service.memories.schemas import (
    MemoryFilters,
    MemoryIn,
    MemoryOut,
    MemoryPage,
    MemoryPatch,
    MemoryStored,
)
from memory_service.providers.embedding import Vectors
from memory_service.providers.errors import ProviderError, ProviderInputError

log = logging.getLogger(__name__)

# How long an inline write's claim outlives its bound (`MemoryService._claim`).
CLAIM_MARGIN_SECONDS = 30.0


@dataclass(kw_only=True)
class MemoryService:
    engine: AsyncEngine
    embedder: Embedder
    limits: Limits
    # A write is acknowledged once durable; waiting for its vector is bounded by this, after
    # which the memory is answered `pending` and the reconciler embeds it.
    inline_embed_seconds: float = 10.0

    @property
    def space(self) -> EmbeddingSpace:
        """The space of every vector this service writes or searches: its embedder's."""
        return self.embedder.space

    async def store(self, items: Sequence[MemoryIn], actor: Actor = NOBODY) -> list[MemoryStored]:
        """Store memories in one transaction; results in input order.

        Identical content in a namespace is one memory (see `repository.upsert_memories` for
        the merge rule); a repeat within the batch reports the first one's id, not created.
        """
        at_most("items", len(items), self.limits.max_batch_items, "items")
        indexed = len(items) > 1
        for index, item in enumerate(items):
            self._check_item(item.content, item.metadata, item.tags, index if indexed else None)
        await self._check_tokens([item.content for item in items], "content", indexed)

        first_of: dict[tuple[str, bytes], int] = {}
        rows: dict[tuple[str, bytes], dict[str, Any]] = {}
        for index, item in enumerate(items):
            key = (item.namespace, content_hash(item.content))
            if key in rows:
                _merge_repeat(rows[key], item)
                continue
            first_of[key] = index
            rows[key] = {
                **item.model_dump(),
                "content_hash": key[1],
                "space_id": self.space.id,
                **actor.columns("created", "updated"),
            }
        claim = self._claim()
        async with self.engine.begin() as conn:
            stored = await repository.upsert_memories(conn, list(rows.values()), claim)
        by_key = {(row.namespace, content_hash(row.content)): row for row in stored}

        pending = [
            PendingText(row.id, row.content, content_hash(row.content))
            for row in stored
            if row.status == "pending" and row.claimed
        ]
        outcome = await self._embed(pending, claim)
        results = []
        for index, item in enumerate(items):
            key = (item.namespace, content_hash(item.content))
            row = by_key[key]
            out = outcome.apply(MemoryOut.model_validate(row._mapping))
            created = bool(row.created) and first_of[key] == index
            results.append(MemoryStored(**out.model_dump(), created=created))
        return results

    async def get(self, memory_id: UUID, namespaces: Namespaces = EVERY_NAMESPACE) -> MemoryOut:
        """The memory, when it is in `namespaces`; NotFound otherwise, as for an unknown id."""
        async with self.engine.connect() as conn:
            row = await repository.get_memory(conn, memory_id, namespaces)
        if row is None:
            raise NotFound(f"memory {memory_id} does not exist", {"id": str(memory_id)})
        return MemoryOut.model_validate(row._mapping)

    async def list(self, namespace: str, limit: int, cursor: str | None) -> MemoryPage:
        check_page_size(limit, self.limits.max_page_size)
        after = decode_cursor(cursor) if cursor else None
        async with self.engine.connect() as conn:
            rows = await repository.list_memories(conn, namespace, limit + 1, after)
        items, next_cursor = page_of(
            [MemoryOut.model_validate(row._mapping) for row in rows], limit
        )
        return MemoryPage(items=items, next_cursor=next_cursor)

    async def update(
        self,
        memory_id: UUID,
        patch: MemoryPatch,
        namespaces: Namespaces = EVERY_NAMESPACE,
        actor: Actor = NOBODY,
    ) -> MemoryOut:
        values: dict[str, Any] = patch.model_dump(include=patch.model_fields_set)
        self._check_item(
            values.get("content", ""), values.get("metadata", {}), values.get("tags", []), None
        )
        if "content" in values:
            # Counted before the transaction opens: no row lock waits on the tokenizer.
            await self._check_tokens([values["content"]], "content", False)
        claim = self._claim()
        async with self.engine.begin() as conn:
            current = await repository.get_memory(conn, memory_id, namespaces)
            if current is None:
                raise NotFound(f"memory {memory_id} does not exist", {"id": str(memory_id)})
            if values.get("content") == current.content:
                del values["content"]
            if "content" in values:
                await repository.delete_expired_duplicate(
                    conn, current.namespace, values["content"]
                )
            try:
                row = await repository.update_memory(
                    conn, memory_id, {**values, **actor.columns("updated")}, claim, namespaces
                )
            except repository.DuplicateContent as exc:
                existing = await repository.find_by_content(
                    conn, current.namespace, values["content"]
                )
                raise Conflict(
                    "another memory in this namespace has that content",
                    {"id": str(existing) if existing else None},
                ) from exc
        if row is None:
            raise NotFound(f"memory {memory_id} does not exist", {"id": str(memory_id)})
        out = MemoryOut.model_validate(row._mapping)
        if "content" in values:
            pending = [PendingText(out.id, out.content, content_hash(out.content))]
            out = (await self._embed(pending, claim)).apply(out)
        return out

    async def delete(self, memory_id: UUID, namespaces: Namespaces = EVERY_NAMESPACE) -> None:
        async with self.engine.begin() as conn:
            deleted = await repository.delete_memory(conn, memory_id, namespaces)
        if not deleted:
            raise NotFound(f"memory {memory_id} does not exist", {"id": str(memory_id)})

    async def forget(self, namespace: str, filters: MemoryFilters) -> int:
        filters.check(self.limits)
        async with self.engine.begin() as conn:
            return await repository.forget(conn, namespace, filters)

    def _claim(self) -> repository.Claim:
        """A claim on the rows a write embeds inline: it outlives the inline bound by a
        margin, so the reconciler takes them only once this write has given up or died."""
        return repository.Claim(self.inline_embed_seconds + CLAIM_MARGIN_SECONDS)

    async def _embed(
        self, pending: Sequence[PendingText], claim: repository.Claim
    ) -> "EmbedOutcome":
        """Embed committed pending rows that `claim` holds, now. When no embedder answers in
        time they are given back, still pending, for the reconciler. A text the embedder
        refuses (only a remote server knows some limits) marks its own memory `failed` with
        the provider's message; the others are embedded regardless."""
        if not pending:
            return EmbedOutcome({}, {})
        try:
            async with asyncio.timeout(self.inline_embed_seconds):
                results = await embed_each(self.embedder, [item.content for item in pending])
        except (ProviderError, TimeoutError) as exc:
            reason = str(exc) or f"no vectors within {self.inline_embed_seconds:.1f}s"
            log.warning("embedding deferred for %d memories: %s", len(pending), reason)
            await self._release(pending, claim)
            return EmbedOutcome({}, {})
        except BaseException:  # cancelled, or a bug: the rows go back all the same
            await asyncio.shield(self._release(pending, claim))
            raise
        done = [(item, r) for item, r in zip(pending, results, strict=True) if _is_vector(r)]
        refused = {
            item.id: str(result)
            for item, result in zip(pending, results, strict=True)
            if isinstance(result, ProviderInputError)
        }
        async with self.engine.begin() as conn:
            embedded_at = (
                await repository.store_vectors(
                    conn,
                    self.space.id,
                    [item for item, _ in done],
                    np.stack([v for _, v in done]),
                    claim,
                )
                if done
                else {}
            )
            for item in pending:
                if item.id in refused:
                    await repository.mark_refused(conn, item, refused[item.id], claim)
        return EmbedOutcome(embedded_at, refused)

    async def _release(self, pending: Sequence[PendingText], claim: repository.Claim) -> None:
        """Give the rows back for the reconciler to take now. The write is committed
        whatever happens here: a failure only leaves the claim to lapse, and is logged."""
        try:
            async with self.engine.begin() as conn:
                await repository.release(conn, [item.id for item in pending], claim)
        except Exception as exc:
            log.warning("claims left to lapse (%d memories): %s", len(pending), failure_text(exc))

    def _check_item(
        self, content: str, metadata: dict[str, Any], tags: Sequence[str], index: int | None
    ) -> None:
        at_most("content", len(content), self.limits.max_content_chars, index=index)
        at_most(
            "metadata",
            metadata_bytes(metadata),
            self.limits.max_metadata_bytes,
            "bytes as JSON",
            index,
        )
        at_most("tags", len(tags), self.limits.max_tags, "tags", index)
        for tag in tags:
            at_most("tags", len(tag), self.limits.max_tag_chars, index=index)

    async def _check_tokens(self, texts: Sequence[str], field: str, indexed: bool) -> None:
        counts = await self.embedder.count_tokens(texts)
        if counts is None:
            return  # a remote embedder refuses over-long input itself; see `_embed`
        for index, tokens in enumerate(counts):
            within_window(
                field,
                tokens,
                self.embedder.window,
                self.space.model,
                index if indexed else None,
            )


def _merge_repeat(row: dict[str, Any], repeat: MemoryIn) -> None:
    """A repeat within one batch merges like a repeat across requests: metadata keys of the
    later item win, tags are unioned in first-seen order, other fields stay the first's."""
    row["metadata"] = {**row["metadata"], **repeat.metadata}
    row["tags"] = list(dict.fromkeys([*row["tags"], *repeat.tags]))


@dataclass(frozen=True)
class EmbedOutcome:
    embedded_at: dict[UUID, datetime]
    refused: dict[UUID, str]

    def apply(self, out: MemoryOut) -> MemoryOut:
        """The memory as it is after this embedding attempt."""
        if out.id in self.embedded_at:
            return out.model_copy(
                update={"status": "embedded", "embedded_at": self.embedded_at[out.id]}
            )
        if out.id in self.refused:
            return out.model_copy(update={"status": "failed", "last_error": self.refused[out.id]})
        return out


def _is_vector(result: VectorOrRefusal) -> TypeGuard[Vectors]:
    return not isinstance(result, ProviderInputError)
