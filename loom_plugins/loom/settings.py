"""Where Loom keeps things: read from the ``[loom]`` section of airflow.cfg, no Airflow import.

Airflow's own override convention applies (``AIRFLOW__LOOM__<KEY>``), so the CLI, the tests and
Airflow's processes all see the same values. Values may use ``${ENV}`` references, as in Airflow.
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def _expand(value: str) -> str:
    for _ in range(5):
        new = os.path.expanduser(os.path.expandvars(value))
        if new == value:
            break
        value = new
    return value


def _config_file() -> Path:
    explicit = os.environ.get("AIRFLOW_CONFIG")
    if explicit:
        return Path(explicit)
    return REPO_ROOT / "airflow.cfg"


@lru_cache(maxsize=1)
def _parsed() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    path = _config_file()
    if path.exists():
        parser.read(path)
    return parser


def loom_option(key: str, default: str) -> str:
    env = os.environ.get(f"AIRFLOW__LOOM__{key.upper()}")
    if env is not None:
        return _expand(env)
    parser = _parsed()
    if parser.has_option("loom", key):
        return _expand(parser.get("loom", key))
    return _expand(default)


@dataclass(frozen=True)
class Settings:
    state_dir: Path
    templates_dir: Path
    store_url: str
    local_ssh_port: int
    api_url: str
    local_pip_cache: Path
    operation_timeout: int

    @property
    def keys_dir(self) -> Path:
        return self.state_dir / "keys"

    @property
    def nodes_dir(self) -> Path:
        return self.state_dir / "nodes"


def load_settings() -> Settings:
    os.environ.setdefault("LOOM_ROOT", str(REPO_ROOT))
    state = Path(loom_option("state_dir", str(REPO_ROOT / "state")))
    return Settings(
        state_dir=state,
        templates_dir=Path(loom_option("templates_dir", str(REPO_ROOT / "templates"))),
        store_url=loom_option("store_sql_conn", f"sqlite:///{state}/loom.db"),
        local_ssh_port=int(loom_option("local_ssh_port", "2222")),
        api_url=loom_option("api_url", "http://127.0.0.1:8080"),
        local_pip_cache=Path(loom_option("local_pip_cache", str(state / "cache" / "pip"))),
        operation_timeout=int(loom_option("operation_timeout", "21600")),
    )
