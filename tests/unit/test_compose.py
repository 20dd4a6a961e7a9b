"""Static checks of the Docker Compose deployment (docker-compose.yml + Dockerfile).

No Docker here: the files are parsed (yaml, configparser, tomllib) and checked against the repo
and against airflow.cfg, the configuration the containers mount. The point is that the compose
file cannot silently drift from the embedded default: a renamed folder, a mistyped
``AIRFLOW__LOOM__*`` key, a port or database name changed in one place only, or a literal secret
fails here.
"""

from __future__ import annotations

import configparser
import importlib.util
import json
import re
import shlex
import tomllib
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
AIRFLOW_CFG = REPO / "airflow.cfg"

AIRFLOW_SERVICES = {
    "airflow-init": ["airflow", "db", "migrate"],
    "airflow-apiserver": ["airflow", "api-server"],
    "airflow-scheduler": ["airflow", "scheduler"],
    "airflow-dag-processor": ["airflow", "dag-processor"],
    "airflow-triggerer": ["airflow", "triggerer"],
}
LONG_RUNNING = set(AIRFLOW_SERVICES) - {"airflow-init"}
EXPECTED_SERVICES = set(AIRFLOW_SERVICES) | {"postgres"}
APISERVER = "airflow-apiserver"
HEALTH_PATH = "/api/v2/monitor/health"

# Host folder (relative to the repo) -> where the container must see it.
EXPECTED_BIND_MOUNTS = {
    "./dags": "/opt/airflow/loom/dags",
    "./loom_plugins": "/opt/airflow/loom/loom_plugins",
    "./templates": "/opt/airflow/loom/templates",
    "./airflow.cfg": "/opt/airflow/loom/airflow.cfg",
}
SECRETS = ("AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY")
SECRET_NAME = re.compile(r"FERNET|JWT|SECRET|TOKEN|PRIVATE_KEY", re.IGNORECASE)
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


# --------------------------------------------------------------------------- fixtures & helpers


@pytest.fixture(scope="module")
def compose() -> dict:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def cfg() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    assert parser.read(AIRFLOW_CFG), "airflow.cfg missing"
    return parser


@pytest.fixture(scope="module")
def airflow_env(services) -> dict[str, str]:
    """The environment every Airflow service gets (asserted identical across them)."""
    envs = {name: env_of(services[name]) for name in AIRFLOW_SERVICES}
    first = envs["airflow-init"]
    for name, env in envs.items():
        assert env == first, f"{name}: environment differs from airflow-init's (x-airflow-common)"
    return first


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def mounts_of(service: dict) -> list[tuple[str, str, str]]:
    """(source, target, mode) for each volume entry, short or long syntax."""
    out = []
    for vol in service.get("volumes") or []:
        if isinstance(vol, dict):
            mode = "ro" if vol.get("read_only") else "rw"
            out.append((str(vol.get("source", "")), str(vol["target"]), mode))
        else:
            parts = str(vol).split(":")
            assert 2 <= len(parts) <= 3, f"unparsable volume {vol!r}"
            out.append((parts[0], parts[1], parts[2] if len(parts) == 3 else "rw"))
    return out


def is_bind(source: str) -> bool:
    return source.startswith((".", "/", "~"))


def host_path(source: str) -> Path:
    return (REPO / source).resolve()


def expand(value: str, env: dict[str, str]) -> str:
    def sub(m: re.Match) -> str:
        assert m.group(1) in env, f"${{{m.group(1)}}} is not set in the containers' environment"
        return env[m.group(1)]

    for _ in range(5):
        value = ENV_REF.sub(sub, value)
    return value


def effective(cfg, env: dict[str, str], section: str, key: str) -> str:
    """The value an Airflow process in the container sees: env override, else airflow.cfg."""
    override = env.get(f"AIRFLOW__{section.upper()}__{key.upper()}")
    if override is not None:
        return expand(override, env)
    return expand(cfg.get(section, key), env)


def container_to_host(service: dict, path: str) -> Path | None:
    """The host path a container path maps to through a bind mount, else None."""
    p = PurePosixPath(path)
    for source, target, _ in mounts_of(service):
        t = PurePosixPath(target)
        if is_bind(source) and (p == t or t in p.parents):
            return host_path(source).joinpath(*p.relative_to(t).parts)
    return None


def named_volume_for(service: dict, path: str) -> str | None:
    p = PurePosixPath(path)
    for source, target, _ in mounts_of(service):
        t = PurePosixPath(target)
        if not is_bind(source) and (p == t or t in p.parents):
            return source
    return None


def port_of(url: str) -> int:
    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    logical, buf = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    assert not buf, f"{path}: dangling line continuation"
    out = []
    for line in logical:
        instr, _, args = line.partition(" ")
        out.append((instr.upper(), args.strip()))
    return out


def copy_sources(args: str) -> list[str] | None:
    """Sources of a COPY/ADD from the build context; None for COPY --from=... (another stage)."""
    if args.startswith("["):
        words = json.loads(args)
    else:
        words = shlex.split(args)
    flags = [w for w in words if w.startswith("--")]
    if any(f.startswith("--from") for f in flags):
        return None
    files = [w for w in words if not w.startswith("--")]
    assert len(files) >= 2, f"COPY {args!r}: needs sources and a destination"
    return files[:-1]


def pg_url(url: str) -> dict:
    parts = urlsplit(url)
    return {
        "scheme": parts.scheme,
        "user": parts.username,
        "password": parts.password,
        "host": parts.hostname,
        "db": parts.path.lstrip("/"),
    }


# --------------------------------------------------------------------------- structure


def test_compose_parses_with_the_expected_services(compose, services):
    missing = EXPECTED_SERVICES - set(services)
    assert not missing, f"services missing from docker-compose.yml: {sorted(missing)}"
    assert "x-airflow-common" in compose, "the shared Airflow settings anchor is gone"
    for name, command in AIRFLOW_SERVICES.items():
        svc = services[name]
        got = svc.get("command")
        got = shlex.split(got) if isinstance(got, str) else got
        assert got == command, f"{name}: command {got!r}, expected {command!r}"
        assert svc.get("build") == compose["x-airflow-common"]["build"], f"{name}: not built from x-airflow-common"
    assert services["airflow-init"].get("restart") == "no"
    for name in LONG_RUNNING:
        assert services[name].get("restart") in ("always", "unless-stopped"), name


def test_airflow_services_share_mounts(services):
    first = sorted(mounts_of(services["airflow-init"]))
    for name in AIRFLOW_SERVICES:
        assert sorted(mounts_of(services[name])) == first, f"{name}: volumes differ from airflow-init's"


def test_bind_mounted_host_paths_exist(compose, services):
    declared_volumes = set((compose.get("volumes") or {}).keys())
    for name, svc in services.items():
        for source, target, mode in mounts_of(svc):
            assert mode in ("ro", "rw"), f"{name}: odd mount mode {mode!r}"
            assert target.startswith("/"), f"{name}: mount target {target!r} not absolute"
            if is_bind(source):
                assert not source.startswith(("/", "~")), f"{name}: {source} must be relative to the repo"
                assert host_path(source).exists(), f"{name}: bind-mounted {source} does not exist in the repo"
            else:
                assert source in declared_volumes, f"{name}: named volume {source!r} not declared"


def test_airflow_services_mount_the_repo_folders(services, airflow_env):
    for name in AIRFLOW_SERVICES:
        binds = {src.rstrip("/"): (tgt, mode) for src, tgt, mode in mounts_of(services[name]) if is_bind(src)}
        for source, target in EXPECTED_BIND_MOUNTS.items():
            assert source in binds, f"{name}: {source} is not mounted"
            assert binds[source][0] == target, f"{name}: {source} mounted at {binds[source][0]}, expected {target}"
        # The configuration file: the repo's airflow.cfg, read-only, and it is AIRFLOW_CONFIG.
        assert binds["./airflow.cfg"][1] == "ro", f"{name}: airflow.cfg must be mounted read-only"
        assert host_path("./airflow.cfg").is_file()
        assert airflow_env["AIRFLOW_CONFIG"] == binds["./airflow.cfg"][0]
    for folder in ("dags", "loom_plugins", "templates"):
        assert (REPO / folder).is_dir(), folder


# --------------------------------------------------------------------------- image


def test_build_context_and_dockerfile_exist_and_copies_resolve(services):
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    for name in AIRFLOW_SERVICES:
        build = services[name]["build"]
        if isinstance(build, str):
            build = {"context": build}
        context = (REPO / build.get("context", ".")).resolve()
        assert context.is_dir(), f"{name}: build context {context} missing"
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        assert dockerfile.is_file(), f"{name}: {dockerfile} missing"

    instructions = dockerfile_instructions(REPO / "Dockerfile")
    copied: list[str] = []
    for instr, args in instructions:
        if instr in ("COPY", "ADD"):
            sources = copy_sources(args)
            if sources is None:
                continue
            for src in sources:
                assert (REPO / src).exists(), f"Dockerfile copies {src}, which does not exist"
                copied.append(src.rstrip("/"))
    # What pip needs to build the package: pyproject, its readme, the package folder.
    needed = {"pyproject.toml", pyproject["project"]["readme"]}
    needed |= {p.split("/")[0] for p in pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]}
    assert needed <= set(copied), f"Dockerfile does not COPY {sorted(needed - set(copied))}"


def test_dockerfile_base_image_user_and_packages():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    pins = [d for d in pyproject["project"]["dependencies"] if d.startswith("apache-airflow==")]
    assert len(pins) == 1
    airflow_version = pins[0].split("==")[1]
    python = re.search(r">=\s*(\d+\.\d+)", pyproject["project"]["requires-python"]).group(1)

    instructions = dockerfile_instructions(REPO / "Dockerfile")
    froms = [args for instr, args in instructions if instr == "FROM"]
    assert len(froms) == 1
    m = re.fullmatch(r"apache/airflow:(\d+\.\d+\.\d+)(?:-python(\d+\.\d+))?", froms[0].split()[0])
    assert m, f"unexpected base image {froms[0]!r}"
    assert m.group(1) == airflow_version, "base image and pyproject pin different Airflow versions"
    assert m.group(2) in (None, python), f"base image python {m.group(2)} vs requires-python {python}"

    user = "airflow"  # the official image's default user
    apt_as, pip_as = None, None
    for instr, args in instructions:
        if instr == "USER":
            user = args.split(":")[0]
        elif instr == "RUN":
            if re.search(r"apt-get install\b.*\bopenssh-client\b", args):
                apt_as = user
            if re.search(r"\bpip install\b", args):
                pip_as = user
                assert "--no-cache-dir" in args
                pinned = re.findall(r"apache-airflow==([\w.]+)", args)
                assert pinned in ([], [airflow_version]), f"pip pins Airflow {pinned}, pyproject {airflow_version}"
    assert apt_as == "root", "openssh-client must be installed via apt as root"
    assert pip_as == "airflow", "the project must be pip-installed as the airflow user"
    assert user == "airflow", "the image must end as the airflow user"


# --------------------------------------------------------------------------- configuration


def test_env_overrides_name_real_options(cfg, airflow_env):
    """A mistyped AIRFLOW__X__Y is silently ignored by Airflow; catch it here."""
    spec = importlib.util.find_spec("airflow")
    assert spec and spec.submodule_search_locations
    config_yml = Path(list(spec.submodule_search_locations)[0]) / "config_templates" / "config.yml"
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    known = yaml.load(config_yml.read_text(), Loader=loader)
    for var in airflow_env:
        if not var.startswith("AIRFLOW__"):
            continue
        section, _, key = var[len("AIRFLOW__"):].lower().partition("__")
        if section == "loom":
            assert cfg.has_option("loom", key), f"{var}: airflow.cfg's [loom] has no key {key!r}"
        else:
            options = (known.get(section) or {}).get("options") or {}
            assert key in options, f"{var}: Airflow 3 has no option [{section}] {key}"


def test_executor_and_auth_manager_match_cfg(cfg, airflow_env):
    assert cfg.get("core", "executor") == "LocalExecutor"
    assert effective(cfg, airflow_env, "core", "executor") == "LocalExecutor"
    assert airflow_env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert effective(cfg, airflow_env, "core", "auth_manager") == cfg.get("core", "auth_manager")


@pytest.mark.parametrize(
    "section,key,folder",
    [("core", "dags_folder", "dags"), ("core", "plugins_folder", "loom_plugins"), ("loom", "templates_dir", "templates")],
)
def test_cfg_folders_resolve_to_the_same_repo_folders(cfg, services, airflow_env, section, key, folder):
    """With ${LOOM_ROOT} = the container's LOOM_ROOT, the folder is the mount of the same repo
    folder `make run` uses (${LOOM_ROOT} = the checkout)."""
    assert airflow_env["LOOM_ROOT"] == "/opt/airflow/loom"
    local = Path(expand(cfg.get(section, key), {**airflow_env, "LOOM_ROOT": str(REPO)}))
    assert local == REPO / folder
    in_container = effective(cfg, airflow_env, section, key)
    for name in AIRFLOW_SERVICES:
        assert container_to_host(services[name], in_container) == REPO / folder, (
            f"{name}: [{section}] {key} = {in_container} is not the mount of ./{folder}"
        )


def test_every_loom_root_path_in_cfg_is_mounted(cfg, services, airflow_env):
    """LOOM_ROOT itself is not mounted, only its subfolders: any ${LOOM_ROOT} path the containers
    still take from airflow.cfg (not overridden) must land in a bind mount."""
    svc = services[APISERVER]
    for section in cfg.sections():
        for key, raw in cfg.items(section):
            if "${LOOM_ROOT}" not in raw or f"AIRFLOW__{section.upper()}__{key.upper()}" in airflow_env:
                continue
            value = expand(raw, airflow_env)
            assert container_to_host(svc, value) is not None, f"[{section}] {key} = {value} is not mounted"


def test_state_and_logs_live_on_named_volumes(cfg, services, airflow_env):
    state_dir = effective(cfg, airflow_env, "loom", "state_dir")
    assert state_dir == "/opt/airflow/state"
    log_dir = effective(cfg, airflow_env, "logging", "base_log_folder")
    for name in AIRFLOW_SERVICES:
        assert named_volume_for(services[name], state_dir), f"{name}: Loom's state_dir is not a named volume"
        assert named_volume_for(services[name], log_dir), f"{name}: {log_dir} is not a shared named volume"


def test_api_port_and_urls_agree_with_cfg(cfg, services, airflow_env):
    port = cfg.getint("api", "port")
    api = services[APISERVER]
    published = [str(p) for p in api.get("ports") or []]
    container_ports = {int(p.split(":")[-1].split("/")[0]) for p in published}
    assert container_ports == {port}, f"api-server publishes {published}, airflow.cfg [api] port is {port}"
    assert effective(cfg, airflow_env, "api", "port") == str(port)
    assert airflow_env["AIRFLOW__API__HOST"] == "0.0.0.0"

    exec_url = airflow_env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]
    assert urlsplit(exec_url).hostname == APISERVER
    assert port_of(exec_url) == port
    assert urlsplit(exec_url).path == urlsplit(cfg.get("core", "execution_api_server_url")).path == "/execution/"

    loom_api = effective(cfg, airflow_env, "loom", "api_url")
    assert urlsplit(loom_api).hostname == APISERVER and port_of(loom_api) == port

    test = api["healthcheck"]["test"]
    test = " ".join(test) if isinstance(test, list) else test
    health = re.search(r"https?://\S+", test)
    assert health, f"api-server healthcheck has no URL: {test!r}"
    assert urlsplit(health.group(0)).path == HEALTH_PATH
    assert port_of(health.group(0)) == port


def test_depends_on_conditions(services):
    assert "healthcheck" in services["postgres"]
    for name in AIRFLOW_SERVICES:
        deps = services[name].get("depends_on")
        assert isinstance(deps, dict), f"{name}: depends_on must use conditions"
        assert deps.get("postgres", {}).get("condition") == "service_healthy", name
        if name in LONG_RUNNING:
            assert deps.get("airflow-init", {}).get("condition") == "service_completed_successfully", name
            assert "healthcheck" in services[name], f"{name}: no healthcheck"


# --------------------------------------------------------------------------- secrets


def test_secrets_are_required_env_references(cfg, services, airflow_env):
    for var in SECRETS:
        value = airflow_env.get(var)
        assert value is not None, f"{var} is not passed to the Airflow services"
        m = re.fullmatch(r"\$\{([A-Za-z_][A-Za-z0-9_]*):\?[^}]+\}", value)
        assert m and m.group(1) == var, f"{var} must be ${{{var}:?...}}, got {value!r}"
    # Nothing secret-looking anywhere in the compose file is a literal.
    for name, svc in services.items():
        for var, value in env_of(svc).items():
            if SECRET_NAME.search(var):
                assert re.fullmatch(r"\$\{[^}]+\}", value), f"{name}: {var} has a literal value"
    # And airflow.cfg carries none either (`loom stack` generates them for the embedded default).
    for section, key in (("core", "fernet_key"), ("api_auth", "jwt_secret"), ("api", "secret_key")):
        assert not cfg.has_option(section, key), f"airflow.cfg must not set [{section}] {key}"


# --------------------------------------------------------------------------- postgres


def test_postgres_creates_both_databases(cfg, services, airflow_env):
    pg = services["postgres"]
    assert re.fullmatch(r"postgres:16(\.\d+)*(-\S+)?", pg["image"]), pg["image"]
    pg_env = env_of(pg)

    airflow_url = pg_url(effective(cfg, airflow_env, "database", "sql_alchemy_conn"))
    loom_url = pg_url(effective(cfg, airflow_env, "loom", "store_sql_conn"))
    assert airflow_url["db"] == "airflow" and loom_url["db"] == "loom"
    for url in (airflow_url, loom_url):
        assert url["scheme"] == "postgresql+psycopg2"
        assert url["host"] == "postgres"
        assert url["user"] == pg_env["POSTGRES_USER"]
        assert url["password"] == pg_env["POSTGRES_PASSWORD"]

    # The init scripts: mounted where the postgres image runs them, and they create both DBs.
    init = [(s, t) for s, t, _ in mounts_of(pg) if t.rstrip("/") == "/docker-entrypoint-initdb.d"]
    assert len(init) == 1 and is_bind(init[0][0]), "postgres: no init scripts mounted"
    init_dir = host_path(init[0][0])
    scripts = sorted(init_dir.glob("*.sql")) if init_dir.is_dir() else [init_dir]
    assert scripts, f"{init_dir}: no .sql files"
    created = set()
    for script in scripts:
        sql = re.sub(r"--[^\n]*", "", script.read_text())
        created |= {m.lower() for m in re.findall(r"\bCREATE\s+DATABASE\s+\"?(\w+)\"?", sql, re.I)}
    assert created == {airflow_url["db"], loom_url["db"]}, f"init SQL creates {sorted(created)}"
    # POSTGRES_DB is created by the image itself before the scripts: it must not be one of them.
    assert pg_env.get("POSTGRES_DB", pg_env["POSTGRES_USER"]) not in created

    assert named_volume_for(pg, "/var/lib/postgresql/data"), "postgres data is not on a named volume"
    assert not pg.get("ports"), "postgres should not be published on the host"
