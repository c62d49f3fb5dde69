"""Table definitions, one MetaData for the whole service.

These describe what the Alembic migrations create; `tests/core/test_migrations.py` checks
that the two agree. The migrations create the vector column untyped (`vector`): the
dimension belongs to the embedding space, not to the schema. The first space registered
types it, and each space gets its own partial index `WHERE space_id = id`
(`search/indexes.py`), so vectors of two spaces never share an index or a search.

Vector indexes are not declared here either: they are built from real rows by the index
lifecycle (`search/indexes.py`), which records each build in `vector_index`. Keyword search
is PostgreSQL's full text over stored tsvector columns and their GIN indexes (migrations
0004, 0007 and 0016).
"""

from typing import Any

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Computed,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    false,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TSVECTOR, UUID

metadata = MetaData()


def _stored_tsvector(column: str) -> Column[Any]:
    """`{column}_tsv`, the stored `to_tsvector('english', column)` that keyword search ranks
    and the full-text GIN index holds (migration 0016)."""
    generated = Computed(f"to_tsvector('english', {column})", persisted=True)
    return Column(f"{column}_tsv", TSVECTOR, generated)


embedding_space = Table(
    "embedding_space",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", Text, nullable=False, unique=True),
    Column("model", Text, nullable=False),
    Column("dimension", Integer, nullable=False),
    Column("normalized", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("reference_texts", ARRAY(Text)),
    Column("reference_vectors", LargeBinary),
    Column("reference_provider", Text),
    CheckConstraint("dimension > 0", name="embedding_space_dimension_positive"),
)


def audit_columns(*actions: str) -> list[Column[Any]]:
    """The API key (id and name) behind each of `actions` (migration 0011, `core/access.py`)."""
    return [
        column
        for action in actions
        for column in (
            Column(f"{action}_by_key_id", UUID(as_uuid=True)),
            Column(f"{action}_by_key_name", Text),
        )
    ]


memory = Table(
    "memory",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True, server_default=func.gen_random_uuid()),
    Column("namespace", Text, nullable=False),
    Column("content", Text, nullable=False),
    _stored_tsvector("content"),
    Column("content_hash", LargeBinary, nullable=False),
    Column("metadata", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("tags", ARRAY(Text), nullable=False, server_default=text("'{}'::text[]")),
    Column("agent_id", Text),
    Column("user_id", Text),
    Column("session_id", Text),
    Column("importance", Float, nullable=False, server_default=text("0.5")),
    Column("expires_at", DateTime(timezone=True)),
    Column("status", Text, nullable=False, server_default=text("'pending'")),
    Column("space_id", Integer, ForeignKey("embedding_space.id"), nullable=False),
    Column("embedding", Vector()),
    # Whether the vector belongs in the space's ANN index: false for a vector written while
    # a diskann index of the space was being built, until the index pass moves it in
    # (migration 0009, `search/indexes.py`). Such rows are the tail searches read exactly.
    Column("in_index", Boolean, nullable=False, server_default=text("true")),
    Column("embed_attempts", Integer, nullable=False, server_default=text("0")),
    # Who may write the vector of a pending row, and until when (migration 0012,
    # `memories/repository.Claim`).
    Column("embed_claim", UUID(as_uuid=True)),
    Column("embed_claim_until", DateTime(timezone=True)),
    Column("last_error", Text),
    Column("embedded_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    *audit_columns("created", "updated"),
    UniqueConstraint("namespace", "content_hash", name="memory_namespace_content_hash_key"),
    CheckConstraint("status IN ('pending', 'embedded', 'failed')", name="memory_status_valid"),
    CheckConstraint(
        "(status = 'embedded') = (embedding IS NOT NULL)", name="memory_embedded_has_vector"
    ),
    CheckConstraint("importance >= 0 AND importance <= 1", name="memory_importance_range"),
    Index("memory_namespace_created_at_id_idx", "namespace", "created_at", "id"),
    Index(
        "memory_pending_idx",
        "space_id",
        "created_at",
        postgresql_where=text("status = 'pending'"),
    ),
    Index("memory_failed_idx", "space_id", postgresql_where=text("status = 'failed'")),
    # Scopes a search filters by, so that a small one is found without a scan (migration 0008).
    *(
        Index(
            f"memory_namespace_{column}_idx",
            "namespace",
            column,
            postgresql_where=text(f"{column} IS NOT NULL"),
        )
        for column in ("user_id", "agent_id", "session_id")
    ),
    Index("memory_tags_idx", "tags", postgresql_using="gin"),
    Index(
        "memory_metadata_idx",
        "metadata",
        postgresql_using="gin",
        postgresql_ops={"metadata": "jsonb_path_ops"},
    ),
    Index("memory_tail_idx", "space_id", postgresql_where=text("NOT in_index")),
    Index("memory_expires_at_idx", "expires_at", postgresql_where=text("expires_at IS NOT NULL")),
    # Keyword search (migrations 0004 and 0016, `search/repository.py`).
    Index("memory_content_fts_idx", "content_tsv", postgresql_using="gin"),
)

document = Table(
    "document",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True, server_default=func.gen_random_uuid()),
    Column("namespace", Text, nullable=False),
    Column("source_uri", Text, nullable=False),
    Column("title", Text),
    Column("content_hash", LargeBinary, nullable=False),
    Column("chunking", Text, nullable=False),
    Column("metadata", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("chunk_count", Integer, nullable=False),
    Column("space_id", Integer, ForeignKey("embedding_space.id"), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    *audit_columns("created", "updated"),
    UniqueConstraint("namespace", "source_uri", name="document_namespace_source_uri_key"),
)

chunk = Table(
    "chunk",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column(
        "document_id",
        UUID(as_uuid=True),
        ForeignKey("document.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("ordinal", Integer, nullable=False),
    Column("text", Text, nullable=False),
    _stored_tsvector("text"),
    Column("token_count", Integer, nullable=False),
    Column("space_id", Integer, ForeignKey("embedding_space.id"), nullable=False),
    Column("embedding", Vector(), nullable=False),
    Column("in_index", Boolean, nullable=False, server_default=text("true")),
    UniqueConstraint("document_id", "ordinal", name="chunk_document_id_ordinal_key"),
    Index("chunk_tail_idx", "space_id", postgresql_where=text("NOT in_index")),
    Index("chunk_text_fts_idx", "text_tsv", postgresql_using="gin"),
)

# Requests and tokens sent to cloud chat providers, per UTC day (gateway/budget.py).
cloud_usage = Table(
    "cloud_usage",
    metadata,
    Column("day", Date, primary_key=True),
    Column("requests", Integer, nullable=False, server_default=text("0")),
    Column("tokens", BigInteger, nullable=False, server_default=text("0")),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("requests >= 0 AND tokens >= 0", name="cloud_usage_non_negative"),
)

# API keys (migration 0010, `auth/`): the SHA-256 of each key, never the key itself.
api_key = Table(
    "api_key",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True, server_default=func.gen_random_uuid()),
    Column("name", Text, nullable=False, unique=True),
    Column("prefix", Text, nullable=False, unique=True),
    Column("secret_sha256", LargeBinary, nullable=False),
    Column("namespaces", ARRAY(Text), nullable=False),
    Column("scopes", ARRAY(Text), nullable=False),
    Column("allow_cloud", Boolean, nullable=False, server_default=false()),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("expires_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
    # What an MCP call that names no namespace uses (migration 0015).
    Column("default_namespace", Text),
    CheckConstraint("cardinality(namespaces) > 0", name="api_key_has_namespaces"),
    CheckConstraint("cardinality(scopes) > 0", name="api_key_has_scopes"),
)

# Tables whose `embedding` column gets one vector index per embedding space.
VECTOR_TABLES: tuple[Table, ...] = (memory, chunk)

# The ANN index of each (vector table, space) (migration 0007, `search/indexes.py`): which
# index serves it now (None: searches scan exactly), and when and on how many rows it was
# built. Whether a build is running is not stored: a builder holds the advisory lock keyed by
# this row's id, so a crashed builder can never leave a stale "building" behind.
vector_index = Table(
    "vector_index",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("table_name", Text, nullable=False),
    Column(
        "space_id", Integer, ForeignKey("embedding_space.id", ondelete="CASCADE"), nullable=False
    ),
    Column("index_name", Text),
    Column("method", Text),
    Column("generation", Integer, nullable=False, server_default=text("0")),
    Column("rows_at_build", BigInteger),
    Column("built_at", DateTime(timezone=True)),
    Column("build_seconds", Float),
    Column("rebuild_requested_at", DateTime(timezone=True)),
    Column("last_error", Text),
    # Recall@k measured by the sampler, by selectivity class (`search/recall.py`).
    Column("recall", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    UniqueConstraint("table_name", "space_id", name="vector_index_table_name_space_id_key"),
    CheckConstraint("table_name IN ('memory', 'chunk')", name="vector_index_table_name_valid"),
)

# The ingestion-job queue (migration 0005, `documents/jobs/repository.py`). A job's inline
# documents live in its own row (JSONB): they are written once with the job, in the one
# INSERT that makes it exist, read whole by the worker that runs it and deleted with it;
# no query ever needs one document of a job, so a child table would only add a second
# write. Per-document outcomes are the `document_errors` list and the counts.
ingest_job = Table(
    "ingest_job",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True, server_default=func.gen_random_uuid()),
    Column("namespace", Text, nullable=False),
    Column("path", Text),
    Column("documents", JSONB),
    # When retention emptied `documents` (migration 0013); the job record stays.
    Column("documents_dropped_at", DateTime(timezone=True)),
    Column("state", Text, nullable=False, server_default=text("'queued'")),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("run_after", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("claimed_by", Text),
    Column("lease_expires_at", DateTime(timezone=True)),
    Column("documents_total", Integer),
    Column("documents_ingested", Integer, nullable=False, server_default=text("0")),
    Column("documents_unchanged", Integer, nullable=False, server_default=text("0")),
    Column("documents_failed", Integer, nullable=False, server_default=text("0")),
    Column("chunks", Integer, nullable=False, server_default=text("0")),
    Column("document_errors", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("last_error", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    *audit_columns("created"),
    CheckConstraint(
        "state IN ('queued', 'running', 'succeeded', 'failed', 'dead')",
        name="ingest_job_state_valid",
    ),
    CheckConstraint("(path IS NULL) <> (documents IS NULL)", name="ingest_job_one_source"),
    # The work query's index: only jobs a worker may still take are in it.
    Index(
        "ingest_job_work_idx",
        "run_after",
        postgresql_where=text("state IN ('queued', 'running')"),
    ),
    Index("ingest_job_created_at_id_idx", "created_at", "id"),
)
