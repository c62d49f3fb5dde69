"""Provider configuration: the YAML file, environment overrides and refusals."""

from pathlib import Path

import pytest

from memory_service.core.errors import StartupError
from memory_service.core.settings import Settings
from memory_service.providers.config import (
    OllamaProviderConfig,
    OpenAIProviderConfig,
    load_providers,
)

ROOT = Path(__file__).resolve().parents[2]


class TestProvidersFile:
    def test_the_repository_default_describes_production(self) -> None:
        config = load_providers(ROOT / "providers.yaml", "default", {}, {})
        assert config.spaces["default"].model == "mxbai-embed-large"
        assert config.spaces["default"].dimension == 1024
        vllm, ollama, local = config.providers
        assert isinstance(vllm, OpenAIProviderConfig) and vllm.kind == "vllm"
        assert vllm.base_url == "http://127.0.0.1:8001" and vllm.space == "default"
        assert isinstance(ollama, OllamaProviderConfig)
        assert ollama.base_url == "http://127.0.0.1:11434" and ollama.space == "default"
        assert vllm.priority < ollama.priority < local.priority
        assert local.kind == "local" and local.space == "minilm"
        assert config.spaces["minilm"].dimension == 384

    def test_the_repository_default_routes_chat_local_first_then_cloud(self) -> None:
        config = load_providers(ROOT / "providers.yaml", "default", {}, {"GROQ_API_KEY": "k"})
        tiers = {chat.name: (chat.tier, chat.configured) for chat in config.chat}
        assert tiers == {
            "vllm-chat": ("local", True),
            "ollama-chat": ("local", True),
            "groq": ("cloud", True),
            "gemini": ("cloud", False),  # GEMINI_API_KEY unset: not configured
        }
        groq = next(chat for chat in config.chat if chat.name == "groq")
        assert groq.base_url == "https://api.groq.com/openai/v1" and groq.api_key == "k"

    def test_an_empty_key_is_no_key(self) -> None:
        config = load_providers(ROOT / "providers.yaml", "default", {}, {"GROQ_API_KEY": ""})
        assert not next(chat for chat in config.chat if chat.name == "groq").configured

    def test_chat_providers_take_environment_overrides(self) -> None:
        overrides = {"groq": {"base_url": "http://127.0.0.1:9/openai/v1"}}
        config = load_providers(ROOT / "providers.yaml", "default", overrides, {})
        groq = next(chat for chat in config.chat if chat.name == "groq")
        assert groq.base_url == "http://127.0.0.1:9/openai/v1"

    def test_environment_overrides_reach_the_named_provider(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("MEMORY_PROVIDERS__VLLM_MXBAI__BASE_URL", "http://vllm:8001")
        monkeypatch.setenv("MEMORY_PROVIDERS__OLLAMA_MXBAI__READ_TIMEOUT", "5")
        settings = Settings()
        config = load_providers(ROOT / "providers.yaml", "default", settings.providers, {})
        vllm, ollama, _ = config.providers
        assert isinstance(vllm, OpenAIProviderConfig) and vllm.base_url == "http://vllm:8001"
        assert ollama.read_timeout == 5.0

    def test_an_override_of_an_unknown_provider_is_refused(self) -> None:
        with pytest.raises(StartupError, match="unknown providers"):
            load_providers(ROOT / "providers.yaml", "default", {"nope": {"priority": 1}}, {})

    def test_api_keys_come_from_the_named_variable(self, tmp_path: Path) -> None:
        path = tmp_path / "providers.yaml"
        path.write_text(
            "spaces: {s: {model: m, dimension: 8}}\n"
            "providers:\n"
            "  - {name: cloud, kind: openai, base_url: 'https://api.example', model: m,"
            " space: s, api_key_env: CLOUD_KEY}\n"
        )
        config = load_providers(path, "s", {}, {"CLOUD_KEY": "sk-test"})
        (cloud,) = config.providers
        assert isinstance(cloud, OpenAIProviderConfig) and cloud.api_key == "sk-test"
        assert "sk-test" not in str(cloud.model_dump())

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("spaces: {s: {model: m, dimension: 8}}\nproviders: []", "at least 1"),
            (
                "spaces: {s: {model: m, dimension: 8}}\nproviders:\n"
                "  - {name: a, kind: vllm, base_url: 'http://x', model: m, space: other}",
                "unknown space",
            ),
            (
                "spaces: {s: {model: m, dimension: 8}}\nproviders:\n"
                "  - {name: a, kind: triton, base_url: 'http://x', model: m, space: s}",
                "kind",
            ),
            (
                "spaces: {s: {model: m, dimension: 8}}\nproviders:\n"
                "  - {name: a, kind: vllm, base_url: 'http://x', model: m, space: s}\n"
                "  - {name: a, kind: ollama, base_url: 'http://y', model: m, space: s}",
                "repeat",
            ),
            ("spaces: [", "cannot read"),
        ],
    )
    def test_invalid_files_are_refused_with_the_reason(
        self, tmp_path: Path, text: str, message: str
    ) -> None:
        path = tmp_path / "providers.yaml"
        path.write_text(text)
        with pytest.raises(StartupError, match=message):
            load_providers(path, "s", {}, {})

    def test_the_service_space_must_be_in_the_file(self) -> None:
        with pytest.raises(StartupError, match="not a space"):
            load_providers(ROOT / "providers.yaml", "nonexistent", {}, {})
