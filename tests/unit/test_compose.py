"""docker-compose.yml, Dockerfile and .dockerignore, checked without a Docker engine.

There is no engine (and no compose plugin) on the build machines, so these files
must be right by construction: every rule compose would enforce at start-up, and
every operational promise the design makes (health-gated start order, exactly one
beat, authenticated Flower, no secret in the repository, a connection budget that
fits PostgreSQL), is asserted here from the parsed files.
"""

from __future__ import annotations

import re
import shlex
import tomllib
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

SERVICES = {"postgres", "redis", "migrate", "worker", "beat", "flower"}
APP_SERVICES = ("migrate", "worker", "beat", "flower")
QUEUES = {"imports", "updates", "maintenance"}
# The only variables an operator must provide; everything else has a default.
REQUIRED_SECRETS = {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "FLOWER_BASIC_AUTH"}
SUPERUSER_RESERVED_CONNECTIONS = 3  # PostgreSQL's default

SECRET_NAME = re.compile(r"pass(word|wd)?|secret|auth|token|credential|api_?key", re.IGNORECASE)
SECRET_FLAGS = {"--requirepass", "--masterauth", "-a", "--pass", "--password"}
URL_CREDENTIALS = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<user>[^\s:@/]*):(?P<password>\$\{[^}]*\}|[^\s@/]*)@",
    re.IGNORECASE,
)


# ---------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Ref:
    """One host-side interpolation: ``${NAME}``, ``${NAME:-default}``, ``${NAME:?msg}``..."""

    name: str
    op: str | None
    arg: str | None


def host_refs(value: str) -> list[Ref]:
    """The variables compose interpolates from the host in ``value``.

    ``$$`` is compose's escape (a literal ``$`` for the container's shell). Any
    other malformed ``$`` raises ValueError, as compose itself would refuse it.
    """
    refs: list[Ref] = []
    i = 0
    while i < len(value):
        if value[i] != "$":
            i += 1
            continue
        nxt = value[i + 1 : i + 2]
        if nxt == "$":
            i += 2
            continue
        if nxt == "{":
            end = value.find("}", i)
            if end == -1:
                raise ValueError(f"unclosed ${{ in {value!r}")
            m = re.fullmatch(r"([A-Za-z_]\w*)(?:(:?[-?+])(.*))?", value[i + 2 : end], re.S)
            if m is None:
                raise ValueError(f"invalid interpolation {value[i : end + 1]!r} in {value!r}")
            refs.append(Ref(m[1], m[2], m[3]))
            i = end + 1
            continue
        m = re.match(r"[A-Za-z_]\w*", value[i + 1 :])
        if m is None:
            raise ValueError(f"invalid interpolation at offset {i} in {value!r} (use $$)")
        refs.append(Ref(m[0], None, None))
        i += 1 + m.end()
    return refs


def is_reference_only(value: Any) -> bool:
    """True when ``value`` is nothing but variable references (host or container side).

    A reference with a default (``${X:-hunter2}``) is a hard-coded secret in disguise
    and does not count.
    """
    if not isinstance(value, str):
        return False
    text = value.strip().strip("\"'")
    container_side = re.sub(r"\$\$\{[A-Za-z_]\w*\}|\$\$[A-Za-z_]\w*", "", text)
    host_side = re.sub(r"\$\{[A-Za-z_]\w*(?::?\?[^}]*)?\}", "", container_side)
    return text != "" and host_side.strip("\"' ") == ""


def strings(node: Any):
    """Every string scalar in a parsed YAML document."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


def hardcoded_secrets(node: Any, path: str = "") -> list[str]:
    """Places in a parsed compose document where a secret is written out literally."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{path}.{key}"
            if (
                isinstance(key, str)
                and SECRET_NAME.search(key)
                and not isinstance(value, dict | list)
            ):
                if value is not None and not is_reference_only(value):
                    found.append(f"{here}={value!r}")
            found.extend(hardcoded_secrets(value, here))
        return found
    if isinstance(node, list):
        for index, item in enumerate(node):
            here = f"{path}[{index}]"
            if isinstance(item, str) and "=" in item and not item.startswith("-"):
                key, _, value = item.partition("=")
                if SECRET_NAME.search(key) and not is_reference_only(value):
                    found.append(f"{here}={item!r}")
            if item in SECRET_FLAGS and index + 1 < len(node):
                if not is_reference_only(node[index + 1]):
                    found.append(f"{here} {item} {node[index + 1]!r}")
            found.extend(hardcoded_secrets(item, here))
        return found
    if isinstance(node, str):
        for m in URL_CREDENTIALS.finditer(node):
            if not is_reference_only(m["password"]):
                found.append(f"{path}: credentials in URL {m[0]!r}")
        try:
            words = shlex.split(node)
        except ValueError:
            words = node.split()
        for flag, value in zip(words, words[1:], strict=False):
            if flag in SECRET_FLAGS and not is_reference_only(value):
                found.append(f"{path}: {flag} {value!r}")
    return found


def argv(command: Any) -> list[str]:
    if command is None:
        return []
    if isinstance(command, str):
        return shlex.split(command)
    return [str(word) for word in command]


def env_map(environment: Any) -> dict[str, Any]:
    if environment is None:
        return {}
    if isinstance(environment, list):
        pairs = (item.partition("=") for item in environment)
        return {key: value for key, _, value in pairs}
    return dict(environment)


def option_value(words: list[str], *names: str) -> str | None:
    for index, word in enumerate(words):
        for name in names:
            if word == name and index + 1 < len(words):
                return words[index + 1]
            if name.startswith("--") and word.startswith(name + "="):
                return word[len(name) + 1 :]
    return None


def resolve(value: Any, provided: dict[str, str]) -> str:
    """Interpolate like compose would, with ``provided`` as the host environment."""
    text = str(value)

    def substitute(m: re.Match[str]) -> str:
        name, op, arg = m["name"], m["op"], m["arg"]
        if name in provided:
            return provided[name]
        if op in (":-", "-"):
            return arg
        raise AssertionError(f"${{{name}}} has no default and is not a documented secret")

    pattern = r"\$\{(?P<name>[A-Za-z_]\w*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    return re.sub(pattern, substitute, text).replace("$$", "$")


def seconds(duration: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", str(duration))
    assert parts and "".join(n + u for n, u in parts) == str(duration), duration
    return sum(float(n) * units[u] for n, u in parts)


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def healthcheck_words(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    if isinstance(test, list):
        assert test[0] in ("CMD", "CMD-SHELL"), test
        return " ".join(test[1:])
    return test


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


@pytest.fixture(scope="module")
def app_env(services: dict[str, Any]) -> dict[str, str]:
    """The shared environment, resolved with the defaults and dummy secrets."""
    dummies = {name: "dummy" for name in REQUIRED_SECRETS}
    return {k: resolve(v, dummies) for k, v in env_map(services["worker"]["environment"]).items()}


@pytest.fixture(scope="module")
def settings(app_env: dict[str, str]):
    from worker.config import Settings

    return Settings(**{key.lower(): value for key, value in app_env.items()})


# ---------------------------------------------------------------- the compose file


def test_compose_specification_with_all_services(compose: dict[str, Any]) -> None:
    assert "version" not in compose, "the Compose Specification has no top-level version"
    assert SERVICES <= set(compose["services"])
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume["source"]
            if not source.startswith((".", "/", "~")):
                assert source in declared, f"{name} uses undeclared named volume {source}"


def test_every_interpolation_is_well_formed(compose: dict[str, Any]) -> None:
    refs = [ref for value in strings(compose) for ref in host_refs(value)]
    assert {ref.name for ref in refs} >= REQUIRED_SECRETS


def test_every_variable_is_a_required_secret_or_has_a_default(compose: dict[str, Any]) -> None:
    for ref in (ref for value in strings(compose) for ref in host_refs(value)):
        if ref.name in REQUIRED_SECRETS:
            # ":?" makes compose refuse to start when the secret is unset *or empty*:
            # an empty --requirepass or FLOWER_BASIC_AUTH would mean no auth at all.
            assert ref.op == ":?", f"${{{ref.name}}} must be written ${{{ref.name}:?message}}"
        else:
            assert not SECRET_NAME.search(ref.name), f"undocumented secret ${ref.name}"
            assert ref.op == ":-" and ref.arg, f"${{{ref.name}}} needs a :-default"


def test_healthchecks_expand_variables_inside_the_container(services: dict[str, Any]) -> None:
    checked = 0
    for name, service in services.items():
        if "healthcheck" in service:
            checked += 1
            assert host_refs(healthcheck_words(service)) == [], (
                f"{name}: healthcheck variables must be $$-escaped, or compose "
                "substitutes the host's values"
            )
    assert checked >= 3


@pytest.mark.parametrize("name", ["postgres", "redis"])
def test_infrastructure_has_healthchecks(services: dict[str, Any], name: str) -> None:
    healthcheck = services[name].get("healthcheck")
    assert healthcheck and not healthcheck.get("disable"), f"{name} needs a healthcheck"
    words = healthcheck_words(services[name])
    if name == "postgres":
        assert "pg_isready" in words and "-U" in words.split()
    else:
        assert "redis-cli" in words and "ping" in words


def test_postgres(services: dict[str, Any]) -> None:
    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:16")
    env = env_map(postgres["environment"])
    assert env["POSTGRES_USER"] == "bulkops" and env["POSTGRES_DB"] == "bulkops"
    assert host_refs(env["POSTGRES_PASSWORD"])[0].name == "POSTGRES_PASSWORD"
    assert option_value(argv(postgres["command"]), "-c") == "max_connections=200"
    assert any(v.startswith("pgdata:/var/lib/postgresql/data") for v in postgres["volumes"])


def test_redis_requires_a_password_persists_and_never_evicts(services: dict[str, Any]) -> None:
    redis = services["redis"]
    assert redis["image"].startswith("redis:7")
    words = argv(redis["command"])
    assert words[0] == "redis-server"
    password = option_value(words, "--requirepass")
    assert password and host_refs(password)[0].name == "REDIS_PASSWORD"
    assert option_value(words, "--appendonly") == "yes"
    assert option_value(words, "--maxmemory-policy") in (None, "noeviction")
    assert any(str(v).endswith(":/data") for v in redis["volumes"])
    # With requirepass set, an unauthenticated ping answers NOAUTH: the check must log in.
    check = healthcheck_words(redis)
    assert "-a" in check.split() or "REDISCLI_AUTH" in env_map(redis.get("environment"))
    assert "PONG" in check, "redis-cli exits 0 on an error reply; look for PONG"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("migrate", {"postgres": "service_healthy"}),
        (
            "worker",
            {
                "postgres": "service_healthy",
                "redis": "service_healthy",
                "migrate": "service_completed_successfully",
            },
        ),
        (
            "beat",
            {
                "postgres": "service_healthy",
                "redis": "service_healthy",
                "migrate": "service_completed_successfully",
            },
        ),
        ("flower", {"redis": "service_healthy"}),
    ],
)
def test_start_order(services: dict[str, Any], name: str, expected: dict[str, str]) -> None:
    depends_on = services[name]["depends_on"]
    assert isinstance(depends_on, dict), f"{name}: depends_on needs the long form (conditions)"
    conditions = {dep: spec.get("condition") for dep, spec in depends_on.items()}
    for dep, condition in expected.items():
        assert conditions.get(dep) == condition, f"{name} -> {dep}"


def test_migrate_is_a_one_shot(services: dict[str, Any]) -> None:
    migrate = services["migrate"]
    assert argv(migrate["command"]) == ["bulkops", "migrate"]
    # Unquoted, YAML reads `no` as False, which compose rejects.
    assert migrate["restart"] == "no"
    assert "build" in migrate


def test_app_services_run_the_project_image(services: dict[str, Any]) -> None:
    images = {services[name].get("image") for name in APP_SERVICES}
    assert len(images) == 1, images
    for name in APP_SERVICES:
        assert services[name].get("build") in (".", {"context": "."}), name


def test_worker_command(services: dict[str, Any]) -> None:
    words = argv(services["worker"]["command"])
    assert words[:4] == ["celery", "-A", "worker", "worker"]
    queues = option_value(words, "-Q", "--queues")
    assert queues is not None and set(queues.split(",")) == QUEUES
    assert "-B" not in words and "--beat" not in words, "beat runs in its own service"


def test_worker_scales_out(services: dict[str, Any]) -> None:
    worker = services["worker"]
    assert "replicas" not in worker.get("deploy", {}), "scale with --scale worker=N"
    assert "container_name" not in worker, "a fixed container_name prevents --scale"
    assert not worker.get("ports"), "published ports prevent --scale"


def test_worker_shuts_down_warm(services: dict[str, Any]) -> None:
    worker = services["worker"]
    assert seconds(worker["stop_grace_period"]) >= 60
    assert worker.get("stop_signal", "SIGTERM") == "SIGTERM", "SIGTERM is the warm shutdown"


def test_worker_healthcheck_probes_this_worker(services: dict[str, Any]) -> None:
    check = healthcheck_words(services["worker"])
    if "bulkops health" in check:
        return
    assert "celery -A worker inspect ping" in check
    destination = option_value(shlex.split(check), "-d", "--destination")
    # Without a destination any live worker answers, and every replica looks healthy.
    assert destination in ("celery@$$HOSTNAME", "celery@$${HOSTNAME}"), destination


def test_worker_reads_imports_from_a_read_only_mount(
    services: dict[str, Any], app_env: dict[str, str]
) -> None:
    root = app_env["BULKOPS_IMPORT_ROOT"]
    mounts = [v.split(":") for v in services["worker"]["volumes"] if isinstance(v, str)]
    assert any(m[1] == root and m[2:] == ["ro"] for m in mounts if len(m) >= 3), mounts


def test_exactly_one_beat(services: dict[str, Any]) -> None:
    running_beat = [
        name
        for name, service in services.items()
        if (words := argv(service.get("command")))[:1] == ["celery"]
        and ("beat" in words or "-B" in words or "--beat" in words)
    ]
    assert running_beat == ["beat"]
    beat = services["beat"]
    assert argv(beat["command"])[:4] == ["celery", "-A", "worker", "beat"]
    assert beat.get("deploy", {}).get("replicas", 1) == 1
    assert beat.get("scale", 1) == 1


def test_flower_requires_authentication(services: dict[str, Any]) -> None:
    import flower.options  # noqa: F401  (registers Flower's options)
    from tornado.options import options

    flower = services["flower"]
    assert argv(flower["command"])[:4] == ["celery", "-A", "worker", "flower"]
    assert option_value(argv(flower["command"]), "--port") == "5555"
    assert any(str(p).split(":")[-1] == "5555" for p in flower["ports"])
    env = env_map(flower["environment"])
    refs = host_refs(env["FLOWER_BASIC_AUTH"])
    assert is_reference_only(env["FLOWER_BASIC_AUTH"])
    assert [(r.name, r.op) for r in refs] == [("FLOWER_BASIC_AUTH", ":?")]
    # Flower maps every FLOWER_* variable to an option and dies on unknown ones.
    for key in env:
        if key.startswith("FLOWER_"):
            assert key.removeprefix("FLOWER_").lower() in options, key


def test_app_services_share_the_environment(compose: dict[str, Any]) -> None:
    services = compose["services"]
    shared = {k: v for k, v in env_map(compose["x-bulkops-env"]).items()}
    for name in APP_SERVICES:
        env = env_map(services[name]["environment"])
        assert {k: env.get(k) for k in shared} == shared, name


def test_urls_point_at_the_compose_services(
    services: dict[str, Any], app_env: dict[str, str]
) -> None:
    postgres_env = env_map(services["postgres"]["environment"])
    database = urllib.parse.urlsplit(app_env["DATABASE_URL"])
    assert database.scheme == "postgresql"
    assert (database.hostname, database.port) == ("postgres", 5432)
    assert database.username == postgres_env["POSTGRES_USER"]
    assert database.path == "/" + postgres_env["POSTGRES_DB"]
    raw = env_map(services["worker"]["environment"])
    assert host_refs(raw["DATABASE_URL"])[0].name == "POSTGRES_PASSWORD"
    redis = urllib.parse.urlsplit(app_env["REDIS_URL"])
    assert (redis.scheme, redis.hostname, redis.port) == ("redis", "redis", 6379)
    assert host_refs(raw["REDIS_URL"])[0].name == "REDIS_PASSWORD"


def test_environment_is_accepted_by_settings_and_defaults_match(
    app_env: dict[str, str], settings: Any
) -> None:
    fields = type(settings).model_fields
    for key in app_env:
        assert key.lower() in fields, f"{key} is not a bulkops setting (typo?)"
    for key in app_env:
        field = fields[key.lower()]
        if key not in ("DATABASE_URL", "REDIS_URL", "BULKOPS_IMPORT_ROOT"):
            assert getattr(settings, key.lower()) == field.default, (
                f"compose's default for {key} differs from worker.config's"
            )


def test_connection_budget_fits_max_connections(services: dict[str, Any], settings: Any) -> None:
    max_connections = int(
        option_value(argv(services["postgres"]["command"]), "-c").split("=")[1]  # type: ignore[union-attr]
    )
    concurrency = option_value(argv(services["worker"]["command"]), "--concurrency", "-c")
    assert concurrency, "without --concurrency a worker forks one process per CPU"
    per_process = settings.db_pool_size + settings.db_max_overflow
    one_replica = int(resolve(concurrency, {})) * per_process
    beat_and_migrate = 2 * per_process
    available = max_connections - SUPERUSER_RESERVED_CONNECTIONS
    assert 2 * one_replica + beat_and_migrate <= available, "two worker replicas must fit"


def test_no_hardcoded_secrets(compose: dict[str, Any]) -> None:
    assert hardcoded_secrets(compose) == []


@pytest.mark.parametrize(
    "document",
    [
        {"environment": {"POSTGRES_PASSWORD": "hunter2"}},
        {"environment": {"POSTGRES_PASSWORD": "${POSTGRES_PASSWORD:-hunter2}"}},
        {"environment": {"FLOWER_BASIC_AUTH": "admin:admin"}},
        {"environment": ["DB_PASSWORD=hunter2"]},
        {"environment": {"SECRET_KEY": 12345}},
        {"environment": {"DATABASE_URL": "postgresql://bulkops:hunter2@postgres/bulkops"}},
        {"environment": {"REDIS_URL": "redis://:hunter2@redis:6379/0"}},
        {"command": ["redis-server", "--requirepass", "hunter2"]},
        {"command": "redis-server --requirepass hunter2 --appendonly yes"},
        {"healthcheck": {"test": ["CMD-SHELL", "redis-cli -a hunter2 ping"]}},
    ],
)
def test_hardcoded_secret_detector_catches(document: dict[str, Any]) -> None:
    assert hardcoded_secrets({"services": {"x": document}}) != []


def test_compose_file_has_no_literal_password_text() -> None:
    text = COMPOSE.read_text()
    for word in ("hunter2", "changeme", "password123", "admin:admin", "postgres:postgres"):
        assert word not in text


# ---------------------------------------------------------------- Dockerfile


def test_dockerfile_base_image_and_non_root_user() -> None:
    instructions = dockerfile_instructions()
    keywords = [k for k, _ in instructions]
    assert instructions[keywords.index("FROM")][1] == "python:3.11-slim"
    users = [arg for k, arg in instructions if k == "USER"]
    assert users, "the image must not run as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    install = next(
        i for i, (k, arg) in enumerate(instructions) if k == "RUN" and "pip install" in arg
    )
    assert "--no-cache-dir" in instructions[install][1]
    assert re.search(r"pip install [^&;]*(?<![\w/.-])\.(?![\w/.-])", instructions[install][1])
    last_user = max(i for i, (k, _) in enumerate(instructions) if k == "USER")
    assert last_user > install, "install as root, then drop privileges"


def test_dockerfile_image_can_read_an_object_store() -> None:
    """BULKOPS_UPLOAD_STORE=s3://… must work in the image: fsspec in, the scheme's package
    a build argument."""
    args = [arg for k, arg in dockerfile_instructions() if k == "ARG"]
    install = next(
        arg for k, arg in dockerfile_instructions() if k == "RUN" and "pip install" in arg
    )
    assert '".[fsspec]"' in install
    assert any(a.startswith("STORE_PACKAGES") for a in args) and "${STORE_PACKAGES}" in install


def test_dockerfile_default_command_is_the_worker() -> None:
    import json

    cmd = [arg for k, arg in dockerfile_instructions() if k == "CMD"][-1]
    words = json.loads(cmd) if cmd.startswith("[") else shlex.split(cmd)
    assert words[:4] == ["celery", "-A", "worker", "worker"]
    assert set(option_value(words, "-Q", "--queues").split(",")) == QUEUES  # type: ignore[union-attr]


def copied_sources() -> set[str]:
    sources: set[str] = set()
    for keyword, arg in dockerfile_instructions():
        if keyword == "COPY":
            words = [w for w in shlex.split(arg) if not w.startswith("--")]
            sources.update(w.rstrip("/") for w in words[:-1])
    return sources


def test_dockerfile_copies_what_the_package_and_migrations_need() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    setuptools = project["tool"]["setuptools"]
    needed = {"pyproject.toml", "alembic.ini", "migrations"}
    needed |= {package.split(".")[0] for package in setuptools.get("packages", [])}
    needed |= {module + ".py" for module in setuptools.get("py-modules", [])}
    if isinstance(project["project"].get("readme"), str):
        needed.add(project["project"]["readme"])
    assert needed <= copied_sources()


def test_dockerfile_copy_sources_exist() -> None:
    missing = sorted(s for s in copied_sources() if not (ROOT / s).exists())
    assert missing == [], f"docker build would fail: {missing} not in the repository"


def test_dockerignore_keeps_local_state_and_secrets_out() -> None:
    patterns = {
        line.strip().strip("/").removeprefix("**/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", ".git", ".bulkops", "__pycache__", "tests", "bench", ".env"} <= patterns
    assert not copied_sources() & patterns, "the Dockerfile copies an ignored path"


# ---------------------------------------------------------------- monitoring profile

MONITORING = ("prometheus", "grafana")
DEPLOY = ROOT / "deploy"


def bind_mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> repository path of each bind mount from the repository."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            mounts[target] = source
    return mounts


def test_monitoring_services_only_behind_their_profile(services: dict[str, Any]) -> None:
    for name in MONITORING:
        assert services[name]["profiles"] == ["monitoring"], name
    for name in SERVICES | {"metrics"}:
        assert "profiles" not in services[name], f"{name} must start without a profile"


@pytest.mark.parametrize("name", MONITORING)
def test_monitoring_mounts_exist_read_only_and_ports_stay_local(
    services: dict[str, Any], name: str
) -> None:
    service = services[name]
    mounts = bind_mounts(service)
    assert mounts, f"{name} needs its configuration mounted"
    for volume in service["volumes"]:
        if volume.startswith("./"):
            assert volume.endswith(":ro"), volume
    for source in mounts.values():
        assert (ROOT / source).exists(), source
    for port in service["ports"]:
        assert str(port).startswith("127.0.0.1:"), f"{name} has no auth: publish on localhost"


def test_prometheus_scrapes_the_exporter(services: dict[str, Any]) -> None:
    mounts = bind_mounts(services["prometheus"])
    config_path = option_value(argv(services["prometheus"]["command"]), "--config.file")
    assert config_path in mounts
    config = yaml.safe_load((ROOT / mounts[config_path]).read_text())
    port = option_value(argv(services["metrics"]["command"]), "--port")
    jobs = config["scrape_configs"]
    targets = [t for job in jobs for c in job["static_configs"] for t in c["targets"]]
    assert targets == [f"metrics:{port}"]
    assert str(port) in [str(p) for p in services["metrics"]["expose"]]
    interval = seconds(config["global"]["scrape_interval"])
    for job in jobs:
        assert seconds(job.get("scrape_timeout", "10s")) <= interval


def test_grafana_provisions_the_datasource_and_the_dashboard(services: dict[str, Any]) -> None:
    import configparser
    import json

    mounts = bind_mounts(services["grafana"])
    provisioning = ROOT / mounts["/etc/grafana/provisioning"]
    (datasource,) = yaml.safe_load(
        (provisioning / "datasources" / "prometheus.yml").read_text()
    )["datasources"]
    prometheus_port = services["prometheus"]["ports"][0].split(":")[-1]
    assert datasource["url"] == f"http://prometheus:{prometheus_port}"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "bulkops.yml").read_text())[
        "providers"
    ]
    dashboards = [t for t in mounts if t.startswith(provider["options"]["path"] + "/")]
    assert dashboards == ["/var/lib/grafana/dashboards/bulkops.json"]
    dashboard = json.loads((ROOT / mounts[dashboards[0]]).read_text())
    uids = {
        source["uid"]
        for panel in dashboard["panels"]
        for source in [panel["datasource"], *(t["datasource"] for t in panel["targets"])]
    }
    assert uids == {datasource["uid"]}
    # read-only, and nobody logs in (there is no password to leak or to forget)
    ini = configparser.ConfigParser()
    ini.read_string((ROOT / mounts["/etc/grafana/grafana.ini"]).read_text())
    assert ini.getboolean("auth", "disable_login_form")
    assert not ini.getboolean("auth.basic", "enabled")
    assert ini["auth.anonymous"]["org_role"] == "Viewer"
    assert provider["allowUiUpdates"] is False
