"""The one settings class. Read at entry points (CLI, app factory, scripts) and passed down."""

from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Limits(BaseModel):
    """Request limits. Breaking one is a 422 `limit_exceeded`, never truncation."""

    max_body_bytes: int = Field(
        32 * 1024 * 1024,
        ge=1_024,
        description="A request body's size, refused with 413 while it is read, before parsing.",
    )
    max_content_chars: int = Field(16_384, ge=1)
    max_query_chars: int = Field(4_096, ge=1)
    max_batch_items: int = Field(1_000, ge=1, le=1_000)
    max_k: int = Field(100, ge=1, le=100)
    max_metadata_bytes: int = Field(16_384, ge=2)
    max_tags: int = Field(64, ge=0)
    max_tag_chars: int = Field(128, ge=1)
    max_page_size: int = Field(200, ge=1)
    max_job_chars: int = Field(
        16_000_000, ge=1, description="Total text of one ingestion job's inline documents."
    )


class Settings(BaseSettings):
    """Service configuration; every field can be set as `MEMORY_<FIELD>`.

    Nested limits use a double underscore: `MEMORY_LIMITS__MAX_K=50`.
    """

    model_config = SettingsConfigDict(
        env_prefix="MEMORY_", env_nested_delimiter="__", extra="ignore"
    )

    database_url: str | None = Field(
        None,
        description="PostgreSQL URL. Unset: an embedded server is started in `data_dir`.",
    )
    data_dir: Path = Field(
        default_factory=lambda: platformdirs.user_data_path("memory-service"),
        description="Where the embedded PostgreSQL keeps its data folder (`<data_dir>/pg`).",
    )
    embedded_database_name: str = "memory"

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65_535)
    shutdown_timeout_seconds: int = Field(
        10,
        ge=1,
        description="After SIGTERM, how long requests may still run before they are cut.",
    )
    log_level: str = "info"
    log_format: Literal["text", "json"] = Field(
        "text", description="`json`: one object per line, with the request id."
    )
    mcp_default_namespace: str | None = Field(
        None,
        max_length=128,
        description="The namespace of MCP calls that name none, with authentication off "
        "(with keys, the key's default namespace).",
    )

    auth: Literal["required", "off", "auto"] = Field(
        "auto",
        description="API keys: required, off, or auto (off when `host` is loopback, else "
        "required). See auth/mode.py.",
    )
    auth_allow_open: bool = Field(
        False, description="Allow MEMORY_AUTH=off on a non-loopback host (warned at every start)."
    )
    allowed_hosts: list[str] = Field(
        default_factory=lambda: ["localhost", "127.0.0.1", "[::1]"],
        description="Host headers accepted while authentication is off (blocks DNS rebinding).",
    )
    api_docs: bool = Field(True, description="Serve /docs and /openapi.json.")
    api_key: SecretStr | None = Field(
        None, description="The key commands send to a running service (`providers`, `mcp`)."
    )
    rate_limit_requests_per_minute: int = Field(
        1_200, ge=0, description="Per API key and process; 0: no limit (auth/limits.py)."
    )
    rate_limit_tokens_per_minute: int = Field(
        1_000_000, ge=0, description="Embedded tokens (estimated) per API key and process; 0: none."
    )

    embedding_space: str = Field(
        "default", min_length=1, max_length=64, description="Name of the space this service writes."
    )
    local_model_path: Path | None = Field(
        None, description="Sentence-transformers folder. Unset: the bundled all-MiniLM-L6-v2."
    )
    local_model_id: str | None = Field(
        None, description="Model id recorded for the space. Unset: the model folder's name."
    )
    embed_batch_size: int = Field(64, ge=1, le=2_048)
    tokenizer_path: Path | None = Field(
        None,
        description="Folder with the space model's tokenizer.json, for chunking documents when "
        "every provider of the space is remote. Unused when a local provider serves it.",
    )

    providers_file: Path | None = Field(
        None, description="Provider YAML (see providers.yaml). Unset: the bundled model alone."
    )
    providers: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Per-provider overrides: MEMORY_PROVIDERS__<NAME>__<FIELD>=value.",
    )
    probe_interval_seconds: float = Field(10.0, gt=0)
    breaker_failure_threshold: int = Field(3, ge=1)
    breaker_cooldown_seconds: float = Field(15.0, gt=0)
    parity_min_cosine: float = Field(0.99, gt=0, le=1)
    coalesce_window_ms: float = Field(5.0, ge=0, le=1_000)
    coalesce_max_batch: int = Field(256, ge=1, le=4_096)
    coalesce_max_in_flight: int = Field(1, ge=1, le=64)
    coalesce_max_waiting: int = Field(
        1_024,
        ge=1,
        description="Texts that may wait for the embedder; past it, 503 overloaded or pending.",
    )

    inline_embed_seconds: float = Field(
        10.0, gt=0, description="How long a write waits for its vector before answering pending."
    )
    reconciler: bool = Field(True, description="Run the pending-embedding reconciler in `serve`.")
    reconcile_interval_seconds: float = Field(5.0, gt=0)
    reconcile_batch_size: int = Field(64, ge=1, le=2_048)
    reconcile_max_attempts: int = Field(5, ge=1)

    chunk_max_tokens: int = Field(256, ge=8, description="Chunk size, special tokens included.")
    chunk_overlap_tokens: int = Field(32, ge=0)
    model_threads: int | None = Field(
        1,
        ge=1,
        description="torch threads of an in-process model; unset: torch's own choice "
        "(scripts/bench/model_threads.py measured the default).",
    )
    ingest_batch_chunks: int = Field(512, ge=1, description="Chunks per embed call and commit.")

    ingest_worker: bool = Field(True, description="Run an ingestion-job worker in `serve`.")
    ingest_allowed_paths: list[Path] = Field(
        default_factory=list,
        description="Folders a job's server-side `path` may name (JSON list); empty: none.",
    )
    ingest_retention_days: float | None = Field(
        7.0,
        ge=0,
        description="Days a finished job keeps its inline documents; null: forever.",
    )
    ingest_max_file_bytes: int = Field(
        16 * 1024 * 1024,
        ge=1,
        description="Largest file a path job reads; a larger one fails alone, unread.",
    )
    ingest_poll_seconds: float = Field(1.0, gt=0, description="Idle worker's queue poll.")
    ingest_lease_seconds: float = Field(
        60.0, ge=1, description="A claimed job is another worker's after this much silence."
    )
    ingest_max_attempts: int = Field(5, ge=1, description="Attempts before a job is dead.")
    ingest_retry_base_seconds: float = Field(
        10.0, gt=0, description="Backoff before retry n is base * 2**(n-1)."
    )
    ingest_retry_max_seconds: float = Field(3_600.0, gt=0, description="Backoff ceiling.")

    ann_method: Literal["auto", "diskann", "hnsw"] = Field(
        "auto",
        description="The ANN index the lifecycle builds: diskann (pgvectorscale), hnsw "
        "(pgvector), or auto: diskann where vectorscale is installed, else hnsw. Changing it "
        "rebuilds existing indexes with the new method.",
    )
    hnsw_ef_search: int = Field(
        100, ge=1, le=1_000, description="hnsw.ef_search per search (HNSW indexes)."
    )
    diskann_search_list_size: int = Field(
        100, ge=10, le=1_000, description="diskann.query_search_list_size per search."
    )
    diskann_rescore: int = Field(
        50, ge=0, le=1_000, description="diskann.query_rescore per search."
    )

    # Where an exact scan's latency crosses the index's at k=10 (docs/benchmarks.md, "Exact
    # scan vs diskann": equal within noise at 1,000 rows, the index 1.3x faster at 2,000).
    ann_min_rows: int = Field(
        2_000,
        ge=1,
        description="Rows with vectors (per table and space) below which vector search scans "
        "exactly and no ANN index exists; at this many the index is built from the real rows.",
    )
    # A filtered scope below this many rows is searched exactly (the same crossover as
    # ann_min_rows; larger scopes are planned by their share, `search/searcher.py`).
    ann_exact_scope_rows: int = Field(
        2_000,
        ge=0,
        description="A search whose scope the planner estimates below this many rows scans "
        "it exactly instead of filtering an ANN index (which loses recall on small scopes).",
    )
    ann_rebuild_growth: float = Field(
        2.0, gt=1, description="Rebuild an ANN index once its rows grew by this factor."
    )
    index_maintainer: bool = Field(True, description="Run the ANN index lifecycle in `serve`.")
    index_interval_seconds: float = Field(
        30.0, gt=0, description="How often `serve` checks whether an index is due."
    )

    recall_sample_rate: float = Field(
        0.01, ge=0, le=1, description="Share of vector searches re-run exactly to measure recall."
    )
    recall_max_per_minute: int = Field(
        30, ge=1, le=6_000, description="At most this many exact re-runs a minute."
    )
    recall_target: float = Field(
        0.95, gt=0, le=1, description="Below this measured recall@k, a warning and a rebuild."
    )

    rrf_k: int = Field(
        60, ge=1, le=1_000, description="Reciprocal rank fusion constant of hybrid search."
    )

    chat_cloud_daily_requests: int = Field(
        500, ge=0, description="Cloud chat requests per UTC day, across all processes; 0: none."
    )
    chat_cloud_daily_tokens: int = Field(
        2_000_000, ge=0, description="Cloud chat tokens (prompt + completion) per UTC day."
    )
    chat_default_max_tokens: int = Field(
        1_024,
        ge=1,
        description="Completion size of a request that sets none: assumed for routing, and "
        "the max_tokens a cloud call goes out with (the budget's hard cap).",
    )

    models_dir: Path | None = Field(
        None, description="The model registry's folder. Unset: `<data_dir>/models`."
    )
    hub_endpoint: str | None = Field(
        None,
        pattern=r"^https?://",
        description="Hugging Face hub for `models download`. Unset: huggingface_hub's default.",
    )
    vllm_python: Path | None = Field(
        None,
        description="Interpreter with vLLM installed. Unset: the repo's .venv-vllm, else this one.",
    )
    vllm_health_timeout_seconds: float = Field(
        300.0, gt=0, description="How long `vllm serve` waits for GET /health."
    )
    vllm_stop_timeout_seconds: float = Field(
        30.0, gt=0, description="SIGTERM grace before SIGKILL in `vllm stop`."
    )
    vllm_cpu_threads_bind: str | None = Field(
        None, description="VLLM_CPU_OMP_THREADS_BIND of started servers. Unset: every core."
    )
    vllm_provider_priority: int = Field(
        10, ge=0, description="Discovery priority of started pooling servers (lower wins)."
    )
    admin_token: SecretStr | None = Field(
        None, description="Bearer token of /v1/admin. Unset: the admin endpoints are disabled."
    )

    pool_size: int = Field(
        20,
        ge=1,
        description="Database connections kept open. Each concurrent write holds one for its "
        "transaction; the reconciler, the ingestion worker and the index builder one each.",
    )
    pool_max_overflow: int = Field(10, ge=0, description="Extra connections under bursts.")
    pool_timeout_seconds: float = Field(
        10.0, gt=0, description="Wait for a free connection before answering 503."
    )
    db_statement_timeout_ms: int = Field(
        30_000, ge=0, description="statement_timeout of the service's sessions; 0: none."
    )
    db_lock_timeout_ms: int = Field(
        10_000, ge=0, description="lock_timeout of the service's sessions; 0: none."
    )
    limits: Limits = Field(default_factory=Limits)

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str | None) -> str | None:
        """Accept plain `postgresql://` URLs and pin the psycopg 3 driver; refuse other schemes."""
        if value is None or value == "":
            return None
        scheme, sep, rest = value.partition("://")
        if not sep or scheme not in {"postgresql", "postgres", "postgresql+psycopg"}:
            raise ValueError("MEMORY_DATABASE_URL must be a postgresql:// URL")
        return f"postgresql+psycopg://{rest}"

    @field_validator("admin_token")
    @classmethod
    def _strong_token(cls, value: SecretStr | None) -> SecretStr | None:
        """Empty means unset; a short token would make process control guessable."""
        if value is None or value.get_secret_value() == "":
            return None
        if len(value.get_secret_value()) < 16:
            raise ValueError("MEMORY_ADMIN_TOKEN must be at least 16 characters")
        return value

    @property
    def model_registry_dir(self) -> Path:
        """The model registry's folder (`models_dir`, default `<data_dir>/models`)."""
        return self.models_dir or self.data_dir / "models"

    @property
    def vllm_dir(self) -> Path:
        """Registrations and logs of the vLLM servers `vllm serve` started."""
        return self.data_dir / "vllm"

    @field_validator("ingest_allowed_paths")
    @classmethod
    def _absolute_paths(cls, value: list[Path]) -> list[Path]:
        """Allowed folders must be absolute: a relative one would depend on the cwd."""
        relative = [str(path) for path in value if not path.is_absolute()]
        if relative:
            raise ValueError(f"MEMORY_INGEST_ALLOWED_PATHS must be absolute: {relative}")
        return value

    @property
    def embedded(self) -> bool:
        """True when the service runs its own PostgreSQL."""
        return self.database_url is None
