"""Ingestion: the full pipeline's chunks/s against the raw limit and langchain-postgres.

The corpus is real documentation: by default PostgreSQL 15's HTML manual as Debian ships it
(`apt-get install postgresql-doc-15`), `--limit-files` pages spread evenly over the folder in
name order, loaded by our HTML loader before any clock starts. Three systems then write the
same chunks to one scratch embedded PostgreSQL with one in-process bundled model (a single
`LocalProvider`, batches of `embed_batch_size` texts):

- `pipeline`: `Ingestor.ingest` from loaded documents to committed chunks, as
  `memory-service ingest` runs it: chunking with the model's tokenizer, embedding through the
  service's routed embedder, one transaction per batch with document upserts and a binary
  COPY into `chunk`.
- `raw`: the limit for that work. The same chunks (cut by our chunker before the clock
  starts) in the same batches go straight to `LocalProvider.embed`, and the rows to a binary
  COPY over psycopg, one transaction per batch, into a table made `LIKE chunk INCLUDING ALL`:
  same columns and the same full-text, BM25 and vector indexes, so the gap to the pipeline
  is what the pipeline adds (chunking, document rows, bookkeeping), not index upkeep.
- `langchain`: langchain-postgres `PGVectorStore.aadd_texts` (the coroutine behind
  `add_texts`; the sync form needs a background event loop of its own) on the same chunk
  texts and batches, embedding with the same `LocalProvider`, into the table langchain
  creates (no index besides its primary key).

Each system first ingests the corpus's first `--warmup-chunks` chunks into the table it is
measured on, untimed, then the whole corpus under a fresh namespace or with fresh ids, batch
by batch, the three taking turns at going first (a pipeline call per batch does exactly what
one call for the whole corpus does at that batch), so that load from elsewhere on the machine
falls on all three alike. A second pass runs all three again with an embedder that costs
nothing (the vectors the first pass made, looked up by text): their write paths alone, which
is what an embedder much faster than this CPU (a GPU, a remote service) would leave to
compare. Prints chunks/s per system and embedder, and the ratios pipeline / raw and
pipeline / langchain.

Set-up, beyond `make venv`: the corpus is Debian's PostgreSQL manual
(`apt-get install postgresql-doc-15`), and langchain-postgres, which is not a dependency of
the service: every release pins `pgvector<0.4`, which the service cannot run with, so it goes
in without its dependencies (`PGVectorStore` never imports pgvector):

    .venv/bin/pip install "langchain-core>=1.2.11,<2" "psycopg-pool>=3.2.1,<4" "asyncpg>=0.30"
    .venv/bin/pip install --no-deps langchain-postgres==0.0.19
"""

import argparse
import asyncio
import itertools
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from langchain_core.embeddings import Embeddings
from langchain_postgres import PGEngine, PGVectorStore
from pgvector.psycopg import register_vector_async
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from memory_service.bootstrap import Resources, open_resources
from memory_service.core.settings import Limits, Settings
from memory_service.documents import loaders
from memory_service.documents.chunking import Chunk, chunk_text
from memory_service.documents.loaders import LoadedDocument, LoaderError
from memory_service.documents.pipeline import Ingestor
from memory_service.embeddings.port import ClientEmbedder, Embedder
from memory_service.providers.embedding import CountTokens, EmbeddingClient, Tokenizer, Vectors
from memory_service.providers.local import LocalProvider
from scripts.bench.harness import command_line, scratch_database

DEFAULT_CORPUS = Path("/usr/share/doc/postgresql-doc-15/html")


@dataclass(frozen=True)
class Corpus:
    documents: list[LoadedDocument]
    chunks: list[list[Chunk]]  # per document, as the pipeline's chunker cuts it
    description: str
    chunking_seconds: float  # what cutting them took, for reading the pipeline / raw gap

    @property
    def chunk_count(self) -> int:
        return sum(len(chunks) for chunks in self.chunks)

    def subset(self, indices: Sequence[int]) -> "Corpus":
        return Corpus(
            [self.documents[i] for i in indices], [self.chunks[i] for i in indices], "part", 0.0
        )

    def prefix(self, chunk_count: int) -> "Corpus":
        """The first documents that together hold at least `chunk_count` chunks."""
        running = itertools.accumulate(len(chunks) for chunks in self.chunks)
        end = next((i + 1 for i, total in enumerate(running) if total >= chunk_count), None)
        return self.subset(range(len(self.documents))[:end])

    def batches(self, batch_chunks: int) -> list["Corpus"]:
        """The corpus cut as the pipeline batches it: whole documents, a batch closed once it
        holds `batch_chunks` chunks or more (`Ingestor.ingest`'s rule)."""
        batches: list[list[int]] = [[]]
        held = 0
        for index, chunks in enumerate(self.chunks):
            batches[-1].append(index)
            held += len(chunks)
            if held >= batch_chunks:
                batches.append([])
                held = 0
        return [self.subset(indices) for indices in batches if indices]


def spread(files: Sequence[Path], limit: int) -> list[Path]:
    """`limit` files taken evenly over `files`, in order: a sample of the whole manual rather
    than its first chapters (alphabetically, the client programs' pages)."""
    if limit >= len(files):
        return list(files)
    return [files[index * len(files) // limit] for index in range(limit)]


def read_documents(folder: Path, limit: int) -> tuple[list[LoadedDocument], str]:
    """The corpus's documents, loaded by our loaders, and a description of them."""
    if not folder.is_dir():
        raise SystemExit(f"no corpus at {folder}: apt-get install postgresql-doc-15, or --corpus")
    every = list(loaders.iter_files(folder))
    documents = []
    for item in loaders.iter_documents(spread(every, limit)):
        if isinstance(item, LoaderError):
            raise SystemExit(f"cannot load the corpus: {item}")
        documents.append(item)
    characters = sum(len(document.text) for document in documents)
    description = (
        f"{len(documents)} of the {len(every)} pages under {folder} (spread evenly in name "
        f"order), {characters / 1e6:.2f} M characters of text after HTML extraction"
    )
    return documents, description


async def load_corpus(
    folder: Path, limit: int, provider: LocalProvider, chunk_tokens: int, overlap_tokens: int
) -> Corpus:
    documents, description = read_documents(folder, limit)

    def cut(count_tokens: CountTokens) -> list[list[Chunk]]:
        return [
            chunk_text(
                document.text, count_tokens, max_tokens=chunk_tokens, overlap_tokens=overlap_tokens
            )
            for document in documents
        ]

    started = time.perf_counter()
    chunks = await provider.run_with_counter(cut)
    return Corpus(documents, chunks, description, time.perf_counter() - started)


async def run_pipeline(ingestor: Ingestor, batch: Corpus, namespace: str) -> float:
    """Seconds `Ingestor.ingest` takes for one batch's documents: as in a longer run, one
    embedding call and one transaction for them."""
    started = time.perf_counter()
    report = await ingestor.ingest(batch.documents, namespace)
    elapsed = time.perf_counter() - started
    expected = (len(batch.documents), batch.chunk_count)
    if report.failed or (report.ingested, report.chunks) != expected:
        raise SystemExit(f"pipeline: {report}")
    return elapsed


async def check_pipeline(engine: AsyncEngine, corpus: Corpus, namespace: str) -> None:
    """Stop unless the pipeline stored exactly the chunks the baselines were given."""
    async with engine.connect() as conn:
        stored = await conn.execute(
            text(
                "SELECT c.text FROM chunk c JOIN document d ON d.id = c.document_id "
                "WHERE d.namespace = :namespace ORDER BY d.source_uri, c.ordinal"
            ),
            {"namespace": namespace},
        )
        order = sorted(range(len(corpus.documents)), key=lambda i: corpus.documents[i].source_uri)
        expected = [chunk.text for i in order for chunk in corpus.chunks[i]]
        if list(stored.scalars()) != expected:
            raise SystemExit("pipeline: its chunks differ from the ones the baselines got")


async def run_raw(
    conn: psycopg.AsyncConnection[Any], embedder: EmbeddingClient, batch: Corpus, space_id: int
) -> tuple[float, float, dict[str, Vectors]]:
    """(embedding seconds, COPY seconds, the vectors by text) for one batch: one embedding
    call, then one transaction with one binary COPY, as the pipeline's repository writes."""
    texts = [chunk.text for chunks in batch.chunks for chunk in chunks]
    started = time.perf_counter()
    vectors = await embedder.embed(texts)
    embedded = time.perf_counter()
    rows = []
    for chunks in batch.chunks:
        document_id = uuid.uuid4()
        rows += [(document_id, c.ordinal, c.text, c.token_count, space_id) for c in chunks]
    async with conn.transaction(), conn.cursor() as cursor, cursor.copy(_COPY_RAW) as copy:
        copy.set_types(["uuid", "int4", "text", "int4", "int4", "vector"])
        for row, vector in zip(rows, vectors, strict=True):
            await copy.write_row((*row, vector))
    return (
        embedded - started,
        time.perf_counter() - embedded,
        dict(zip(texts, vectors, strict=True)),
    )


_COPY_RAW = (
    "COPY raw_chunk (document_id, ordinal, text, token_count, space_id, embedding) "
    "FROM STDIN (FORMAT BINARY)"
)


class LangchainEmbeddings(Embeddings):
    """langchain's view of one of our embedders (the bundled model's `LocalProvider`, or the
    precomputed vectors), so that every system embeds the same texts in the same batches."""

    def __init__(self, embedder: EmbeddingClient) -> None:
        self.embedder = embedder

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        vectors: list[list[float]] = (await self.embedder.embed(texts)).tolist()
        return vectors

    async def aembed_query(self, text: str) -> list[float]:
        return (await self.aembed_documents([text]))[0]

    # The model runs on the provider's one worker thread, reached from the event loop; this
    # benchmark only drives the store asynchronously.
    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        raise NotImplementedError("use aembed_documents")

    def embed_query(self, text: str) -> list[float]:
        raise NotImplementedError("use aembed_query")


async def run_langchain(store: PGVectorStore, batch: Corpus) -> float:
    started = time.perf_counter()
    await store.aadd_texts([chunk.text for chunks in batch.chunks for chunk in chunks])
    return time.perf_counter() - started


class PrecomputedEmbedder(EmbeddingClient):
    """An embedder that costs nothing: the vectors an earlier run of the model gave the same
    texts. Running each system with it leaves its write path alone; the model's tokenizer
    still cuts the pipeline's chunks."""

    def __init__(self, model: LocalProvider, vectors: dict[str, Vectors]) -> None:
        self.name = "precomputed"
        self.model_id, self.dimension = model.model_id, model.dimension
        self.normalized, self.window = model.normalized, model.window
        self.max_batch = 1_000_000
        self._model = model
        self._vectors = vectors

    async def _embed_batch(self, texts: Sequence[str]) -> Vectors:
        return np.stack([self._vectors[text] for text in texts])

    def tokenizer(self) -> Tokenizer:
        return self._model


SYSTEMS = ("raw", "pipeline", "langchain")


@dataclass
class Systems:
    """The three systems, opened on one database and ready to run with a given embedder."""

    resources: Resources
    raw: psycopg.AsyncConnection[Any]  # autocommit: `transaction()` is BEGIN ... COMMIT
    langchain: PGEngine
    args: argparse.Namespace
    vectors: dict[str, Vectors] = field(default_factory=dict)  # by text, from raw's runs

    async def run(
        self,
        embedder: EmbeddingClient,
        corpus: Corpus,
        tag: str,
        pipeline_embedder: Embedder | None = None,
    ) -> dict[str, float]:
        """Seconds each system takes for `corpus`, in a fresh namespace or with fresh ids;
        the pipeline embeds with `pipeline_embedder` when given (the same model behind it).

        Batch by batch, the systems taking turns at going first, so that load from elsewhere
        on the machine (and any order effect) falls on all three alike."""
        args, space = self.args, self.resources.space
        ingestor = Ingestor(
            engine=self.resources.engine,
            embedder=pipeline_embedder or ClientEmbedder(embedder, space),
            chunk_tokens=args.chunk_tokens,
            overlap_tokens=args.overlap_tokens,
            limits=Limits(),
            batch_chunks=args.batch_chunks,
        )
        store = await PGVectorStore.create(
            self.langchain, LangchainEmbeddings(embedder), table_name="langchain_chunk"
        )
        seconds = dict.fromkeys(("raw: COPY", *SYSTEMS), 0.0)
        for turn, batch in enumerate(corpus.batches(args.batch_chunks)):
            for system in SYSTEMS[turn % 3 :] + SYSTEMS[: turn % 3]:
                if system == "raw":
                    embedding, copying, vectors = await run_raw(self.raw, embedder, batch, space.id)
                    seconds["raw"] += embedding + copying
                    seconds["raw: COPY"] += copying
                    self.vectors.update(vectors)
                elif system == "pipeline":
                    seconds["pipeline"] += await run_pipeline(ingestor, batch, f"bench-{tag}")
                else:
                    seconds["langchain"] += await run_langchain(store, batch)
        await check_pipeline(self.resources.engine, corpus, f"bench-{tag}")
        return seconds


async def measure(
    url: str, provider: LocalProvider, corpus: Corpus, args: argparse.Namespace
) -> dict[str, dict[str, float]]:
    """Seconds per system for the whole corpus with the bundled model after an untimed
    warm-up, then with its vectors precomputed (the write paths alone)."""
    settings = Settings(database_url=url, reconciler=False, probe_interval_seconds=3600)
    conninfo = url.replace("postgresql+psycopg://", "postgresql://", 1)
    langchain = PGEngine.from_engine(create_async_engine(url))
    try:
        async with (
            open_resources(settings, local=provider) as resources,
            await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as raw,
        ):
            await raw.execute("CREATE TABLE raw_chunk (LIKE chunk INCLUDING ALL)")
            await register_vector_async(raw)
            await langchain.ainit_vectorstore_table("langchain_chunk", provider.dimension)
            systems = Systems(resources, raw, langchain, args)
            # The pipeline embeds as the service does, through the registry's routed embedder,
            # whose only provider here is `provider`; the baselines call `provider` itself.
            routed = resources.batch_embedder
            await systems.run(provider, corpus.prefix(args.warmup_chunks), "warm", routed)
            bundled = await systems.run(provider, corpus, "bundled", routed)
            precomputed = PrecomputedEmbedder(provider, systems.vectors)
            return {
                "bundled model": bundled,
                "none (precomputed)": await systems.run(precomputed, corpus, "precomputed"),
            }
    finally:
        await langchain.close()


def report(corpus: Corpus, seconds: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    chunks = corpus.chunk_count
    tokens = sum(chunk.token_count for chunks in corpus.chunks for chunk in chunks)
    print(f"corpus: {corpus.description}")
    print(
        f"{chunks} chunks of at most {args.chunk_tokens} tokens (overlap {args.overlap_tokens}, "
        f"mean {tokens / chunks:.0f}) in {len(corpus.batches(args.batch_chunks))} batches of "
        f"{args.batch_chunks}+ chunks; warm-up: {args.warmup_chunks}+ chunks, not counted"
    )
    print(f"{'chunks/s by embedder':22s}{'raw':>10s}{'pipeline':>10s}{'langchain':>10s}", end="")
    print(f"{'pipeline/raw':>14s}{'pipeline/langchain':>20s}")
    for embedder, runs in seconds.items():
        rates = [chunks / runs[system] for system in ("raw", "pipeline", "langchain")]
        print(f"{embedder:22s}" + "".join(f"{rate:10.1f}" for rate in rates), end="")
        print(f"{rates[1] / rates[0]:14.1%}{rates[1] / rates[2]:19.2f}x")
    bundled = seconds["bundled model"]
    print(
        f"raw with the bundled model: {bundled['raw'] - bundled['raw: COPY']:.1f} s embedding, "
        f"{bundled['raw: COPY']:.1f} s COPY; pipeline: {bundled['pipeline']:.1f} s, of which "
        f"chunking about {corpus.chunking_seconds:.1f} s (timed when cutting the baselines' chunks)"
    )
    print(f"command: {command_line()}")


def arguments() -> argparse.Namespace:
    defaults = Settings.model_fields
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--limit-files", type=int, default=120)
    parser.add_argument("--warmup-chunks", type=int, default=64)
    parser.add_argument("--chunk-tokens", type=int, default=defaults["chunk_max_tokens"].default)
    parser.add_argument(
        "--overlap-tokens", type=int, default=defaults["chunk_overlap_tokens"].default
    )
    parser.add_argument("--batch-chunks", type=int, default=defaults["ingest_batch_chunks"].default)
    return parser.parse_args()


async def main() -> None:
    args = arguments()
    provider = await LocalProvider.load(max_batch=Settings.model_fields["embed_batch_size"].default)
    try:
        corpus = await load_corpus(
            args.corpus, args.limit_files, provider, args.chunk_tokens, args.overlap_tokens
        )
        with scratch_database() as url:
            seconds = await measure(url, provider, corpus, args)
    finally:
        await provider.aclose()
    report(corpus, seconds, args)


if __name__ == "__main__":
    asyncio.run(main())
