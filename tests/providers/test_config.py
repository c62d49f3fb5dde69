"""Provider configuration: the YAML file, environment overrides and refusals."""

from pathlib import Path

import httpx
import pytest

from memory_service.core.errors import StartupError
from memory_service.core.settings import Settings
from memory_service.providers.config import (
    OllamaProviderConfig,
    OpenAIProviderConfig,
    load_providers,
)
from memory_service.providers.http import MAX_UPSTREAM_MESSAGE, error_message

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


class TestSecrets:
    SECRET = "gsk_live_0123456789abcdefABCDEF"

    def test_a_typo_beside_a_key_never_prints_the_key(self, tmp_path: Path) -> None:
        """The entry's api_key is resolved from the environment before validation: the
        refusal names the field and the problem, never an input value."""
        path = tmp_path / "providers.yaml"
        path.write_text(
            """
spaces:
  default: {model: m, dimension: 8}
providers:
  - {name: local, kind: local, space: default}
chat:
  - {name: groq, kind: groq, base_url: "https://api.groq.com/openai/v1", model: x,
     api_key_env: GROQ_API_KEY, contxt_window: 8192}
"""
        )
        with pytest.raises(StartupError) as refused:
            load_providers(path, "default", {}, {"GROQ_API_KEY": self.SECRET})
        message = str(refused.value)
        assert "chat.0.contxt_window: Extra inputs are not permitted" in message
        assert self.SECRET not in message and self.SECRET[-8:] not in message
        assert refused.value.__cause__ is None and refused.value.__suppress_context__


class TestUpstreamWords:
    """What a provider says reaches clients (error bodies, route reasons, /v1/providers):
    credentials it echoes are cut out, and its words are capped."""

    @pytest.mark.parametrize(
        ("echoed", "secret"),
        [
            ("Incorrect API key provided: sk-proj-abcdefghijklmnop1234", "abcdefghijklmnop1234"),
            ("invalid key gsk_live_0123456789abcdefABCDEF", "0123456789abcdefABCDEF"),
            ("API key AIzaSyA1234567890abcdefghijklmnopq not valid", "1234567890abcdefghij"),
            ("header was Bearer abc.def.ghi", "abc.def.ghi"),
            ("token 0123456789abcdef0123456789abcdef0123 rejected", "0123456789abcdef01234"),
        ],
    )
    def test_a_credential_in_an_error_is_redacted(self, echoed: str, secret: str) -> None:
        message = error_message(httpx.Response(401, json={"error": {"message": echoed}}))
        assert message.startswith("HTTP 401: ") and "[redacted]" in message, message
        assert secret not in message, message

    def test_long_words_are_capped(self) -> None:
        message = error_message(httpx.Response(500, text="oops " * 500))
        assert len(message) < MAX_UPSTREAM_MESSAGE + 30 and message.endswith("[cut]")
