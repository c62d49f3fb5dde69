"""Ollama's native API wire format, as the Ollama server (gin, Go) sends it.

Sources, ollama/ollama `server/routes.go` (current main, with `embedWithRetry`), `api/types.go`,
`llm/server.go`, `runner/ollamarunner/runner.go`:

- Every JSON answer is gin's `c.JSON`: compact, `Content-Type: application/json; charset=utf-8`;
  every error is `{"error": "<message>"}`.
- `EmbedHandler` (`POST /api/embed`): body `{"model", "input": str | [str], "truncate",
  "dimensions", "keep_alive", "options"}`; an empty body is 400 "missing request body"; a
  non-string list item or other input type is 400 "invalid input type"; an empty string, empty
  list or null input is 200 `{"model", "embeddings": []}`; each vector goes through
  `normalize` (L2 to unit length; yes, `/api/embed` normalizes) and, with `0 < dimensions < len`,
  is cut and normalized again. `EmbedResponse` is `{"model", "embeddings", "total_duration",
  "load_duration", "prompt_eval_count"}` with the last three `omitempty` (nanoseconds, tokens).
- An over-long input with `truncate: false`: the runner refuses the sequence with
  `errorInputTooLong` ("the input length exceeds the context length", `http.Error` 400) and the
  handler passes status and trimmed text on: 400 `{"error": "the input length exceeds the
  context length"}`. With `truncate` unset or true the input is cut to the context and embedded.
  (Ollama 0.3.x-0.11 refused in the handler itself with "input length exceeds maximum context
  length"; match both texts or, better, the 400 alone.)
- `handleScheduleError`: a model that is not pulled is 404
  `model "<name>" not found, try pulling it first` (Go `%q`); any other scheduling failure is a
  500 with the error text, e.g. the classic "llama runner process has terminated: exit status 2",
  which `error_500` uses.
- `EmbeddingsHandler` (legacy `POST /api/embeddings`): `{"model", "prompt"}` ->
  `{"embedding": [float64...]}` without normalization; empty prompt -> `{"embedding": []}`;
  empty model -> 400 "model is required"; runner errors -> 500 `{"error": ...}`.
- `ListHandler` (`GET /api/tags`): `{"models": [{"name", "model", "modified_at", "size", "digest",
  "details": {"parent_model", "format", "family", "families", "parameter_size",
  "quantization_level"}}]}`, most recently modified first.
- `GET /` and `HEAD /`: "Ollama is running"; `GET /api/version`: `{"version": ...}`.
- gin's router (`HandleMethodNotAllowed = true`): unknown path -> 404 "404 page not found",
  known path with another method -> 405 "405 method not allowed", both `text/plain`. An Ollama
  older than 0.3.0 has no `/api/embed` route at all, which is what `legacy_only` emulates.
"""

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from starlette.responses import PlainTextResponse, Response

from tests.servers.faults import JSON

OLLAMA_VERSION: Final = "0.21.0"
RUNNING: Final = "Ollama is running"
NOT_FOUND: Final = "404 page not found"
METHOD_NOT_ALLOWED: Final = "405 method not allowed"
INPUT_TOO_LONG: Final = "the input length exceeds the context length"
RUNNER_TERMINATED: Final = "llama runner process has terminated: exit status 2"
_DEFAULT_HOST_PREFIX: Final = "registry.ollama.ai/library/"


class GinJSONResponse(Response):
    """gin's `c.JSON`: compact UTF-8 JSON, `<>&` escaped as Go does, charset in the content type."""

    media_type = "application/json; charset=utf-8"

    def render(self, content: object) -> bytes:
        text = json.dumps(content, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
            text = text.replace(char, escaped)
        return text.encode("utf-8")


def error(message: str, status_code: int) -> Response:
    return GinJSONResponse({"error": message}, status_code=status_code)


def gin_text(text: str, status_code: int) -> Response:
    """gin's router errors: `text/plain` without a charset."""
    return Response(text.encode(), status_code=status_code, headers={"Content-Type": "text/plain"})


def running() -> Response:
    """gin's `c.String`: `text/plain; charset=utf-8`."""
    return PlainTextResponse(RUNNING)


def model_not_found(name: str) -> Response:
    return error(f"model {json.dumps(name)} not found, try pulling it first", 404)


def canonical_name(name: str) -> str:
    """How Ollama resolves a model name: case-insensitive, default host and `latest` tag."""
    short = name.strip().lower().removeprefix(_DEFAULT_HOST_PREFIX)
    return short if ":" in short.rsplit("/", 1)[-1] else f"{short}:latest"


@dataclass(frozen=True)
class OllamaModel:
    """One pulled model as `/api/tags` lists it.

    The defaults describe the bundled all-MiniLM-L6-v2 as Ollama ships it (a BERT GGUF, F16,
    23M parameters, about 46 MB). `digest` defaults to sha256 of the name: stable and
    well-formed, but not the registry's real digest.
    """

    name: str
    size: int = 45_960_996
    family: str = "bert"
    parameter_size: str = "23M"
    quantization_level: str = "F16"
    modified_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    digest: str = ""

    def tag(self) -> dict[str, JSON]:
        digest = self.digest or hashlib.sha256(self.name.encode()).hexdigest()
        details: dict[str, JSON] = {
            "parent_model": "",
            "format": "gguf",
            "family": self.family,
            "families": [self.family],
            "parameter_size": self.parameter_size,
            "quantization_level": self.quantization_level,
        }
        return {
            "name": self.name,
            "model": self.name,
            "modified_at": go_time(self.modified_at),
            "size": self.size,
            "digest": digest,
            "details": details,
        }


def go_time(moment: datetime) -> str:
    """Go's RFC 3339 with nanoseconds, trailing zeros dropped, `Z` for UTC."""
    utc = moment.astimezone(UTC)
    fraction = f"{utc.microsecond:06d}".rstrip("0")
    return utc.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if fraction else "") + "Z"


def input_texts(value: JSON) -> list[str] | None:
    """`EmbedHandler`'s reading of `input`; None means 400 "invalid input type"."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return [item for item in value if isinstance(item, str)]
    return None


def go_type_error(value: JSON, field_name: str, go_type: str, struct: str) -> Response | None:
    """encoding/json's `UnmarshalTypeError` text, as gin's binding error returns it."""
    expected = {"bool": bool, "int": int, "string": str}[go_type]
    if value is None or (isinstance(value, expected) and not _is_bool_as_int(value, go_type)):
        return None
    kind = {bool: "bool", str: "string", list: "array", dict: "object"}.get(type(value), "number")
    return error(
        f"json: cannot unmarshal {kind} into Go struct field {struct}.{field_name} of type "
        f"{go_type}",
        400,
    )


def _is_bool_as_int(value: JSON, go_type: str) -> bool:
    return go_type == "int" and isinstance(value, bool)


def go_syntax_error(failure: json.JSONDecodeError) -> Response:
    """encoding/json's `SyntaxError` text, close enough: the offending character or EOF."""
    text = failure.doc
    if failure.pos >= len(text.rstrip()):
        return error("unexpected EOF", 400)
    return error(f"invalid character {text[failure.pos]!r} looking for beginning of value", 400)
