"""Requests and answers of the vLLM lifecycle, shared by the CLI and the admin endpoints."""

from pydantic import BaseModel, ConfigDict, Field

from memory_service.serving.registrations import NAME_PATTERN, Runner, VllmRegistration


class ServeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, description="A model folder, or a registry model id.")
    served_model_name: str = Field(min_length=1, max_length=200)
    runner: Runner
    port: int = Field(ge=1, le=65_535)
    host: str = "127.0.0.1"
    name: str | None = Field(
        None, pattern=NAME_PATTERN, description="Registration name; default: the served name."
    )
    space: str | None = Field(
        None, description="Space a pooling server is declared for; default: the service's."
    )
    extra_args: list[str] = Field(
        default_factory=list, description="Passed to vLLM verbatim (no shell)."
    )


class ServerStatus(BaseModel):
    registration: VllmRegistration
    alive: bool = Field(description="The process runs.")
    healthy: bool = Field(description="GET /health answered 200 just now.")
    detail: str


class StopResult(BaseModel):
    name: str
    outcome: str = Field(description="terminated, killed, or not running (already gone).")
