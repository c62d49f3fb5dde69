"""Settings: env prefix, URL normalization, refusals."""

import pytest
from pydantic import ValidationError

from memory_service.core.settings import Settings


class TestSettings:
    def test_reads_the_memory_prefix(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("MEMORY_PORT", "9123")
        monkeypatch.setenv("MEMORY_LIMITS__MAX_K", "20")
        settings = Settings()
        assert settings.port == 9123
        assert settings.limits.max_k == 20

    @pytest.mark.parametrize(
        "url",
        [
            "postgresql://u:p@db:5432/memory",
            "postgres://u:p@db:5432/memory",
            "postgresql+psycopg://u:p@db:5432/memory",
        ],
    )
    def test_database_url_uses_psycopg3(self, url: str) -> None:
        settings = Settings(database_url=url)
        assert settings.database_url == "postgresql+psycopg://u:p@db:5432/memory"
        assert settings.embedded is False

    def test_no_url_means_embedded(self) -> None:
        assert Settings(database_url=None).embedded is True
        assert Settings(database_url="").embedded is True

    @pytest.mark.parametrize("url", ["sqlite:///memory.db", "mysql://x@y/z", "not a url"])
    def test_other_databases_are_refused(self, url: str) -> None:
        with pytest.raises(ValidationError, match="postgresql"):
            Settings(database_url=url)

    def test_limits_cannot_exceed_the_contract(self) -> None:
        with pytest.raises(ValidationError):
            Settings(limits={"max_batch_items": 5000})
        with pytest.raises(ValidationError):
            Settings(limits={"max_k": 0})
