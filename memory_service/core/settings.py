"""The one settings class. Read at entry points (CLI, app factory, scripts) and passed down."""

from pathlib import Path
from typing import Any

import platformdirs
from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Limits(BaseModel):
    """Request limits. Breaking one is a 422 `limit_exceeded`, never truncation."""

    max_content_chars: int = Field(16_384, ge=1)
    max_query_chars: int = Field(4_096, ge=1)
    max_batch_items: int = Field(1_000, ge=1, le=1_000)
    max_k: int = Field(100, ge=1, le=100)
    max_metadata_bytes: int = Field(16_384, ge=2)
    max_tags: int = Field(64, ge=0)
    max_tag_chars: int = Field(128, ge=1)
    max_page_size: int = Field(200, ge=1)


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
    log_level: str = "info"

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

    inline_embed_seconds: float = Field(
        10.0, gt=0, description="How long a write waits for its vector before answering pending."
    )
    reconciler: bool = Field(True, description="Run the pending-embedding reconciler in `serve`.")
    reconcile_interval_seconds: float = Field(5.0, gt=0)
    reconcile_batch_size: int = Field(64, ge=1, le=2_048)
    reconcile_max_attempts: int = Field(5, ge=1)

    chunk_max_tokens: int = Field(256, ge=8, description="Chunk size, special tokens included.")
    chunk_overlap_tokens: int = Field(32, ge=0)
    ingest_batch_chunks: int = Field(512, ge=1, description="Chunks per embed call and commit.")

    diskann_search_list_size: int = Field(
        100, ge=10, le=1_000, description="diskann.query_search_list_size per search."
    )
    diskann_rescore: int = Field(
        50, ge=0, le=1_000, description="diskann.query_rescore per search."
    )

    rrf_k: int = Field(
        60, ge=1, le=1_000, description="Reciprocal rank fusion constant of hybrid search."
    )

    pool_size: int = Field(10, ge=1)
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

    @property
    def embedded(self) -> bool:
        """True when the service runs its own PostgreSQL."""
        return self.database_url is None
