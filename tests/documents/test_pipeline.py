"""Ingestion on real files with real embeddings, against a real database."""

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import event, text

from memory_service.bootstrap import Resources
from memory_service.core.settings import Limits
from memory_service.documents import loaders
from memory_service.documents.loaders import LoadedDocument
from memory_service.documents.pipeline import Ingestor
from tests.fakes import FlakyProvider

DATA = Path(__file__).parent / "data"
MAX_TOKENS = 64


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    shutil.copytree(DATA, folder)
    return folder


@pytest.fixture
def ingestor(resources: Resources) -> Ingestor:
    return Ingestor(
        engine=resources.engine,
        embedder=resources.batch_embedder,
        chunk_tokens=MAX_TOKENS,
        overlap_tokens=8,
        limits=Limits(),
        batch_chunks=16,
    )


async def chunk_rows(resources: Resources) -> list[tuple[str, int, int, str, int]]:
    async with resources.engine.connect() as conn:
        result = await conn.execute(
            text(
                "SELECT d.source_uri, c.id, c.ordinal, c.text, c.token_count FROM chunk c "
                "JOIN document d ON d.id = c.document_id ORDER BY d.source_uri, c.ordinal"
            )
        )
        return [tuple(row) for row in result]


class TestIngestor:
    async def test_ingests_every_loader_format_into_checked_chunks(
        self, ingestor: Ingestor, resources: Resources, corpus: Path
    ) -> None:
        report = await ingestor.ingest(loaders.iter_documents([corpus]), "docs")
        assert report.failed == []
        assert report.ingested == report.documents == 8
        rows = await chunk_rows(resources)
        assert len(rows) == report.chunks > report.documents
        counted = await resources.batch_embedder.count_tokens([row[3] for row in rows])
        assert counted == [row[4] for row in rows], "token counts are the model's own"
        assert max(row[4] for row in rows) <= MAX_TOKENS
        async with resources.engine.connect() as conn:
            mismatched = await conn.scalar(
                text(
                    "SELECT count(*) FROM document d WHERE d.chunk_count <> "
                    "(SELECT count(*) FROM chunk c WHERE c.document_id = d.id)"
                )
            )
            uris = list((await conn.execute(text("SELECT source_uri FROM document"))).scalars())
        suffixes = {uri.split("#")[0].rsplit(".", 1)[-1] for uri in uris}
        assert mismatched == 0
        assert {"md", "html", "htm", "jsonl", "txt"} <= suffixes

    async def test_re_ingesting_unchanged_documents_adds_nothing(
        self, ingestor: Ingestor, resources: Resources, corpus: Path
    ) -> None:
        await ingestor.ingest(loaders.iter_documents([corpus]), "docs")
        before = await chunk_rows(resources)
        again = await ingestor.ingest(loaders.iter_documents([corpus]), "docs")
        assert (again.ingested, again.unchanged, again.chunks) == (0, 8, 0)
        assert await chunk_rows(resources) == before, "not even rewritten"

    async def test_a_changed_file_replaces_its_chunks_and_only_those(
        self, ingestor: Ingestor, resources: Resources, corpus: Path
    ) -> None:
        await ingestor.ingest(loaders.iter_documents([corpus]), "docs")
        before = await chunk_rows(resources)
        guide = corpus / "guide.md"
        guide.write_text(guide.read_text() + "\n\nA brand new closing paragraph about otters.\n")
        report = await ingestor.ingest(loaders.iter_documents([corpus]), "docs")
        assert (report.ingested, report.unchanged) == (1, 7)
        after = await chunk_rows(resources)
        uri = guide.resolve().as_uri()
        assert [row for row in after if row[0] != uri] == [row for row in before if row[0] != uri]
        new = [row for row in after if row[0] == uri]
        assert [row[2] for row in new] == list(range(len(new))), "ordinals are contiguous"
        assert any("otters" in row[3] for row in new)
        assert not {row[1] for row in new} & {row[1] for row in before if row[0] == uri}

    async def test_prune_removes_documents_whose_files_are_gone(
        self, ingestor: Ingestor, resources: Resources, corpus: Path
    ) -> None:
        await ingestor.ingest(loaders.iter_documents([corpus]), "docs")
        gone = corpus / "notes.txt"
        gone.unlink()
        seen = {item.source_uri for item in loaders.iter_documents([corpus])}
        pruned = await ingestor.prune("docs", [corpus.resolve().as_uri() + "/"], seen)
        assert pruned == [gone.resolve().as_uri()]
        assert all(row[0] != gone.resolve().as_uri() for row in await chunk_rows(resources))

    async def test_a_bad_record_fails_alone(
        self, ingestor: Ingestor, resources: Resources, tmp_path: Path
    ) -> None:
        path = tmp_path / "mixed.jsonl"
        path.write_text('{"text": "good one"}\n{"title": "no text"}\n{"text": "good two"}\n')
        report = await ingestor.ingest(loaders.iter_documents([path]), "docs")
        assert report.ingested == 2
        ((source, error),) = report.failed
        assert source == path.resolve().as_uri()
        assert 'line 2: missing "text"' in error

    async def test_an_embedder_outage_is_reported_and_the_next_run_catches_up(
        self, ingestor: Ingestor, resources: Resources, embedder: FlakyProvider, corpus: Path
    ) -> None:
        embedder.down = True
        report = await ingestor.ingest(loaders.iter_documents([corpus]), "docs")
        assert report.ingested == 0 and len(report.failed) == 8
        assert all("not embedded" in error for _, error in report.failed)
        assert await chunk_rows(resources) == []
        embedder.down = False
        again = await ingestor.ingest(loaders.iter_documents([corpus]), "docs")
        assert again.ingested == 8 and again.failed == []


def note(n: int, version: int = 1) -> LoadedDocument:
    body = " ".join(
        f"Note {n}, revision {version}: sentence {s} about the quarterly roadmap." for s in range(6)
    )
    return LoadedDocument(f"mem://notes/{n:03d}", f"note {n}", body, {"n": n})


async def chunks_by_source(resources: Resources) -> dict[str, list[tuple[int, str]]]:
    """source URI -> its (chunk id, text) in ordinal order."""
    by_source: dict[str, list[tuple[int, str]]] = {}
    for source, chunk_id, _, body, _ in await chunk_rows(resources):
        by_source.setdefault(source, []).append((chunk_id, body))
    return by_source


class TestBatchWrites:
    async def test_many_documents_some_unchanged_some_changed_some_new_land_right(
        self, ingestor: Ingestor, resources: Resources
    ) -> None:
        first = await ingestor.ingest([note(n) for n in range(40)], "docs")
        assert (first.ingested, first.failed) == (40, [])
        before = await chunks_by_source(resources)
        changed, new = set(range(0, 40, 4)), range(40, 45)
        items = [note(n, 2 if n in changed else 1) for n in range(40)]
        items += [note(n) for n in new]
        again = await ingestor.ingest(items, "docs")
        assert (again.documents, again.ingested, again.unchanged) == (45, 15, 30)
        after = await chunks_by_source(resources)
        assert set(after) == {note(n).source_uri for n in range(45)}
        for n in range(45):
            uri = note(n).source_uri
            texts = [body for _, body in after[uri]]
            assert texts[0].startswith(f"Note {n}, revision"), n
            if n in changed:
                assert all("revision 2" in body and "revision 1" not in body for body in texts)
                assert not {i for i, _ in after[uri]} & {i for i, _ in before[uri]}, "replaced"
            elif n < 40:
                assert after[uri] == before[uri], "unchanged documents are not rewritten"
        async with resources.engine.connect() as conn:
            mismatched = await conn.scalar(
                text(
                    "SELECT count(*) FROM document d WHERE d.chunk_count <> "
                    "(SELECT count(*) FROM chunk c WHERE c.document_id = d.id)"
                )
            )
        assert mismatched == 0

    async def test_statements_per_run_do_not_grow_with_its_documents(
        self, resources: Resources, ingestor: Ingestor
    ) -> None:
        ingestor = replace(ingestor, batch_chunks=10_000)
        statements: list[str] = []

        def count(*args: object) -> None:
            statements.append(str(args[2]))

        event.listen(resources.engine.sync_engine, "before_cursor_execute", count)
        try:
            await ingestor.ingest([note(n) for n in range(3)], "few")
            few = len(statements)
            statements.clear()
            await ingestor.ingest([note(n) for n in range(60)], "many")
            many = len(statements)
        finally:
            event.remove(resources.engine.sync_engine, "before_cursor_execute", count)
        assert few == many, statements

    async def test_a_source_seen_twice_in_one_run_ends_as_its_last_text(
        self, ingestor: Ingestor, resources: Resources
    ) -> None:
        report = await ingestor.ingest([note(1), note(2), note(1, 2), note(1, 2)], "docs")
        assert (report.documents, report.ingested, report.unchanged) == (4, 3, 1)
        after = await chunks_by_source(resources)
        texts = [body for _, body in after[note(1).source_uri]]
        assert texts and all("revision 2" in body for body in texts)
        assert set(after) == {note(1).source_uri, note(2).source_uri}
