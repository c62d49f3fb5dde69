"""Provider configuration: a YAML file (`MEMORY_PROVIDERS_FILE`) plus environment overrides.

    spaces:                      # embedding spaces, by name (MEMORY_EMBEDDING_SPACE picks one)
      default: {model: mxbai-embed-large, dimension: 1024, normalized: true}
    providers:                   # a discriminated union on `kind`
      - {name: vllm-mxbai, kind: vllm, base_url: "http://127.0.0.1:8001",
         model: mxbai-embed-large, space: default, priority: 10, ...}

A provider's `model` is the name its server serves; `space` names the space it is declared
for, whose `model` is the embedding model's identity. `base_url` is the server root (no
`/v1`). Any field can be overridden per provider from the environment:
`MEMORY_PROVIDERS__<NAME>__<FIELD>=value`, with the name upper-cased and `-` written `_`.
API keys are never in the file: `api_key_env` names the variable that holds one, read by
the entry point that loads this file.

Without a file, the service runs the embedded default: the bundled local model alone.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from memory_service.core.errors import StartupError


class SpaceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    dimension: int = Field(gt=0, le=16_000)
    normalized: bool = True


class _ProviderBase(BaseModel):
    """What every provider has, whatever its task."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$", max_length=64)
    priority: int = Field(100, ge=0, description="Lower is preferred.")
    connect_timeout: float = Field(2.0, gt=0)
    read_timeout: float = Field(30.0, gt=0)

    @property
    def missing(self) -> str | None:
        """What the provider lacks to be tried at all; None when it lacks nothing."""
        return None

    @property
    def configured(self) -> bool:
        return self.missing is None


class HttpEndpointConfig(_ProviderBase):
    """A provider reached over HTTP: the shared base of every embedding and chat server."""

    base_url: str = Field(pattern=r"^https?://")
    model: str = Field(min_length=1, description="The model name the server serves.")
    api_key_env: str | None = None
    api_key: str | None = Field(None, exclude=True, description="Resolved from api_key_env.")

    @property
    def missing(self) -> str | None:
        """A provider that needs a key and has none is not configured, never available."""
        if self.api_key_env is not None and not self.api_key:
            return f"set {self.api_key_env}"
        return None


class _Embeds(BaseModel):
    """What an embedding provider adds: the space it is declared for, its batch size."""

    space: str
    max_batch: int = Field(64, ge=1, le=4_096)


class OpenAIProviderConfig(HttpEndpointConfig, _Embeds):
    """vLLM, or any OpenAI-compatible server (TEI, infinity, OpenAI)."""

    kind: Literal["vllm", "openai"]


class OllamaProviderConfig(HttpEndpointConfig, _Embeds):
    kind: Literal["ollama"]
    keep_alive: str = "5m"


class LocalProviderConfig(_ProviderBase, _Embeds):
    """A sentence-transformers folder run in-process; default: the bundled model."""

    kind: Literal["local"]
    path: Path | None = None


# The embedding task's union (the chat task's is `ChatProviderConfig`, one class: its kinds
# differ only in their paths, which the chat client derives from the kind).
EmbedderConfig = Annotated[
    OpenAIProviderConfig | OllamaProviderConfig | LocalProviderConfig,
    Field(discriminator="kind"),
]

CLOUD_CHAT_KINDS = frozenset({"groq", "gemini", "openai"})
CHAT_MIN_CONTEXT_WINDOW = 256


class ChatProviderConfig(HttpEndpointConfig):
    """A chat model behind an OpenAI-compatible `/chat/completions`.

    `base_url` is the server root for `vllm` and `ollama` (the client adds `/v1`) and the API
    base for cloud kinds, as their documentation gives it (Groq
    `https://api.groq.com/openai/v1`, Gemini
    `https://generativelanguage.googleapis.com/v1beta/openai`). `tier` defaults from the kind:
    vllm and ollama are local, groq, gemini and openai are cloud. `context_window` is what the
    escalation policy compares a request's estimated size with. `aliases` are extra model names
    clients may ask for (`model` itself and `auto` always route here).
    """

    kind: Literal["vllm", "ollama", "openai", "groq", "gemini"]
    tier: Literal["local", "cloud"] | None = None
    context_window: int = Field(8192, ge=CHAT_MIN_CONTEXT_WINDOW)
    aliases: list[str] = Field(default_factory=list)
    keep_alive: str | None = Field(None, description="Ollama only: how long the model stays.")
    read_timeout: float = Field(120.0, gt=0, description="A completion's answer.")
    probe_timeout: float = Field(5.0, gt=0, description="A probe's answer (health, models).")

    @model_validator(mode="after")
    def _tier(self) -> "ChatProviderConfig":
        if self.tier is None:
            self.tier = "cloud" if self.kind in CLOUD_CHAT_KINDS else "local"
        return self


class ProvidersConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    spaces: dict[str, SpaceConfig]
    providers: list[EmbedderConfig] = Field(min_length=1)
    chat: list[ChatProviderConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> "ProvidersConfig":
        names = [provider.name for provider in [*self.providers, *self.chat]]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"provider names repeat: {repeated}")
        for provider in self.providers:
            if provider.space not in self.spaces:
                raise ValueError(
                    f"provider {provider.name!r} names unknown space {provider.space!r}"
                )
        return self


def bundled_default(
    space: str, model: str, dimension: int, normalized: bool, path: Path | None
) -> ProvidersConfig:
    """One local model (the bundled one unless `path`), serving the space `space`; for chat,
    the two clouds, configured only once their keys are in the environment."""
    return ProvidersConfig(
        spaces={space: SpaceConfig(model=model, dimension=dimension, normalized=normalized)},
        providers=[
            LocalProviderConfig(name="local", kind="local", space=space, priority=100, path=path)
        ],
        chat=[
            ChatProviderConfig(
                name="groq",
                kind="groq",
                base_url="https://api.groq.com/openai/v1",
                model="llama-3.3-70b-versatile",
                context_window=131_072,
                api_key_env="GROQ_API_KEY",
                priority=10,
            ),
            ChatProviderConfig(
                name="gemini",
                kind="gemini",
                base_url="https://generativelanguage.googleapis.com/v1beta/openai",
                model="gemini-2.5-flash",
                context_window=1_048_576,
                api_key_env="GEMINI_API_KEY",
                priority=20,
            ),
        ],
    )


def load_providers(
    path: Path | None,
    space: str,
    overrides: Mapping[str, Mapping[str, Any]],
    environ: Mapping[str, str],
    default: ProvidersConfig | None = None,
) -> ProvidersConfig:
    """Read `path` (or take `default`), override, validate; raise StartupError with the
    reason when anything is off."""
    if path is None:
        if default is None:
            raise StartupError("no providers file and no default configuration")
        raw: dict[str, Any] = default.model_dump(mode="json", exclude_none=True)
    else:
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise StartupError(f"cannot read providers file {path}: {exc}") from exc
    providers = [*raw.get("providers", []), *raw.get("chat", [])]
    known = {_env_key(str(entry.get("name", ""))) for entry in providers}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise StartupError(f"MEMORY_PROVIDERS__* overrides name unknown providers: {unknown}")
    for entry in providers:
        entry.update(overrides.get(_env_key(str(entry.get("name", ""))), {}))
        if entry.get("api_key_env"):
            entry["api_key"] = environ.get(str(entry["api_key_env"]))
    try:
        config = ProvidersConfig.model_validate(raw)
    except ValidationError as exc:
        # Never the input values: an entry's api_key has been resolved from the environment.
        problems = "\n".join(
            f"  {'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors(include_input=False, include_url=False)
        )
        raise StartupError(
            f"invalid provider configuration ({path or 'built-in'}):\n{problems}"
        ) from None
    if space not in config.spaces:
        raise StartupError(
            f"MEMORY_EMBEDDING_SPACE={space!r} is not a space of {path or 'the built-in default'}"
            f"; spaces: {sorted(config.spaces)}"
        )
    return config


def _env_key(name: str) -> str:
    """How a provider name appears in environment variables, as pydantic-settings reads them."""
    return name.lower().replace("-", "_")
