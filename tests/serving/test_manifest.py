"""The model registry's manifest and folders, on a real file system."""

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from memory_service.core.errors import Conflict, InvalidRequest, NotFound
from memory_service.serving.manifest import ModelEntry, ModelRegistry

DOWNLOADED_AT = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def add_model(registry: ModelRegistry, model_id: str, content: bytes = b"weights") -> ModelEntry:
    folder = registry.folder_for(model_id)
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "model.bin").write_bytes(content)
    return registry.record(
        ModelEntry(
            id=model_id,
            revision="a" * 40,
            path=folder,
            size_bytes=len(content),
            task="embed",
            downloaded_at=DOWNLOADED_AT,
        )
    )


class TestModelRegistry:
    def test_record_and_list_round_trip_through_the_json_file(self, tmp_path: Path) -> None:
        registry = ModelRegistry(tmp_path / "models")
        add_model(registry, "org/zeta")
        add_model(registry, "org/alpha")
        assert [entry.id for entry in registry.entries()] == ["org/alpha", "org/zeta"]
        raw = json.loads((tmp_path / "models" / "manifest.json").read_text())
        assert raw["version"] == 1
        assert raw["models"][0] == {
            "id": "org/alpha",
            "revision": "a" * 40,
            "path": str(tmp_path / "models" / "org--alpha"),
            "size_bytes": 7,
            "task": "embed",
            "downloaded_at": "2025-01-02T03:04:05Z",
            "last_used_at": None,
        }
        assert ModelRegistry(tmp_path / "models").get("org/zeta").size_bytes == 7

    def test_resolve_by_id_or_folder_marks_the_model_used(self, tmp_path: Path) -> None:
        registry = ModelRegistry(tmp_path / "models")
        entry = add_model(registry, "org/model")
        first, second = datetime(2025, 2, 1, tzinfo=UTC), datetime(2025, 3, 1, tzinfo=UTC)
        assert registry.resolve("org/model", now=first) is not None
        assert registry.get("org/model").last_used_at == first
        by_folder = registry.resolve(str(entry.path) + "/", now=second)
        assert by_folder is not None and by_folder.id == "org/model"
        assert registry.get("org/model").last_used_at == second

    def test_resolve_of_something_else_is_none_and_changes_nothing(self, tmp_path: Path) -> None:
        registry = ModelRegistry(tmp_path / "models")
        add_model(registry, "org/model")
        before = (tmp_path / "models" / "manifest.json").read_text()
        assert registry.resolve(str(tmp_path)) is None
        assert registry.resolve("org/other") is None
        assert registry.get("org/model").last_used_at is None
        assert (tmp_path / "models" / "manifest.json").read_text().startswith(before[:20])

    def test_delete_removes_the_folder_and_the_entry(self, tmp_path: Path) -> None:
        registry = ModelRegistry(tmp_path / "models")
        kept, gone = add_model(registry, "org/kept"), add_model(registry, "org/gone")
        deleted = registry.delete("org/gone")
        assert deleted.id == "org/gone"
        assert not gone.path.exists()
        assert kept.path.exists()
        assert [entry.id for entry in registry.entries()] == ["org/kept"]

    def test_unknown_model_is_not_found_and_says_how_to_get_it(self, tmp_path: Path) -> None:
        registry = ModelRegistry(tmp_path / "models")
        with pytest.raises(NotFound, match="models download org/missing"):
            registry.delete("org/missing")
        with pytest.raises(NotFound):
            registry.get("org/missing")

    @pytest.mark.parametrize("model_id", ["../etc", "org/../x", "a/b/c", "/abs", "", "org/"])
    def test_ids_that_could_escape_the_folder_are_refused(
        self, tmp_path: Path, model_id: str
    ) -> None:
        with pytest.raises(InvalidRequest):
            ModelRegistry(tmp_path / "models").folder_for(model_id)

    def test_an_entry_pointing_outside_the_registry_is_not_deleted(self, tmp_path: Path) -> None:
        registry = ModelRegistry(tmp_path / "models")
        outside = tmp_path / "precious"
        outside.mkdir()
        registry.record(
            ModelEntry(
                id="org/odd",
                revision="b" * 40,
                path=outside,
                size_bytes=0,
                task="chat",
                downloaded_at=DOWNLOADED_AT,
            )
        )
        with pytest.raises(Conflict):
            registry.delete("org/odd")
        assert outside.is_dir()
        assert [entry.id for entry in registry.entries()] == ["org/odd"]

    def test_a_corrupt_manifest_is_a_clear_error_not_an_empty_registry(
        self, tmp_path: Path
    ) -> None:
        (tmp_path / "models").mkdir()
        (tmp_path / "models" / "manifest.json").write_text("{not json")
        with pytest.raises(Conflict, match="unreadable"):
            ModelRegistry(tmp_path / "models").entries()
