"""Run the local Airflow stack (api-server, scheduler, dag-processor, triggerer) in the background.

Components start separately (``airflow standalone`` orphans its children on SIGTERM), each in
its own session with a pid file under ``state/airflow/run/``; ``stop`` ends exactly those
process groups. Secrets (fernet key, JWT secret, API secret key) are generated once into
``state/airflow/secrets.env`` (mode 0600), never into the repo.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loom.errors import LoomError
from loom.procs import process_alive
from loom.settings import REPO_ROOT, load_settings

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")


@dataclass(frozen=True)
class Stack:
    root: Path = REPO_ROOT

    @property
    def home(self) -> Path:
        return Path(os.environ.get("AIRFLOW_HOME") or self.root / "state" / "airflow")

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def api(self) -> str:
        return load_settings().api_url.rstrip("/")

    @property
    def passwords_file(self) -> Path:
        return self.home / "simple_auth_manager_passwords.json.generated"

    # --- environment ----------------------------------------------------------------------
    def _secrets(self) -> dict[str, str]:
        path = self.home / "secrets.env"
        if not path.exists():
            from cryptography.fernet import Fernet

            self.home.mkdir(parents=True, exist_ok=True)
            values = {
                "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(48),
                "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(48),
            }
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.writelines(f"{k}={v}\n" for k, v in values.items())
        out = {}
        for line in path.read_text().splitlines():
            if "=" in line and not line.startswith("#"):
                key, value = line.split("=", 1)
                out[key.strip()] = value.strip()
        return out

    def environ(self) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("LOOM_ROOT", str(self.root))
        env.setdefault("AIRFLOW_HOME", str(self.home))
        env.setdefault("AIRFLOW_CONFIG", str(self.root / "airflow.cfg"))
        for key, value in self._secrets().items():
            env.setdefault(key, value)
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    # --- processes ------------------------------------------------------------------------
    def _pid(self, component: str) -> int | None:
        try:
            pid = int((self.run_dir / f"{component}.pid").read_text())
        except (OSError, ValueError):
            return None
        return pid if process_alive(pid) else None

    def running(self) -> dict[str, int | None]:
        return {c: self._pid(c) for c in COMPONENTS}

    def airflow(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        exe = str(Path(sys.executable).parent / "airflow")
        return subprocess.run([exe, *args], env=self.environ(), check=check, text=True, capture_output=True)

    def start(self, wait: float = 180, say: Any = print) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.home / "logs").mkdir(exist_ok=True)
        running = self.running()
        if all(running.values()) and self.healthy():
            say(f"Airflow is already running at {self.api}")
            return
        say("Migrating Airflow's metadata DB (SQLite) ...")
        result = self.airflow("db", "migrate", check=False)
        if result.returncode != 0:
            raise LoomError(f"`airflow db migrate` failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
        self._sqlite_wal()
        exe = str(Path(sys.executable).parent / "airflow")
        env = self.environ()
        for component in COMPONENTS:
            if running.get(component):
                continue
            log = open(self.home / "logs" / f"{component}.log", "ab")
            proc = subprocess.Popen(
                [exe, component], env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True, close_fds=True, cwd=self.home,
            )
            log.close()
            (self.run_dir / f"{component}.pid").write_text(str(proc.pid))
            say(f"started airflow {component} (pid {proc.pid}, log {self.home / 'logs' / (component + '.log')})")
        self.wait_healthy(wait)

    def _sqlite_wal(self) -> None:
        """WAL journaling for the embedded SQLite metadata DB (persistent in the file): readers no
        longer block the writer, so the API server, scheduler and dag-processor contend less."""
        import sqlite3

        db = self.home / "airflow.db"
        if db.exists():
            with sqlite3.connect(db, timeout=60) as conn:
                conn.execute("PRAGMA journal_mode=WAL")

    def stop(self, say: Any = print) -> None:
        for component in reversed(COMPONENTS):
            pid = self._pid(component)
            if pid is None:
                continue
            try:
                os.killpg(pid, signal.SIGTERM)  # its own session: the group is exactly what we started
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 30
            while self._pid(component) and time.monotonic() < deadline:
                time.sleep(0.2)
            if self._pid(component):
                os.killpg(pid, signal.SIGKILL)
            say(f"stopped airflow {component} (pid {pid})")
            (self.run_dir / f"{component}.pid").unlink(missing_ok=True)

    # --- API ------------------------------------------------------------------------------
    def healthy(self) -> bool:
        try:
            data = self.request("GET", "/api/v2/monitor/health", auth=False)
        except (LoomError, OSError):
            return False
        parts = ("metadatabase", "scheduler", "dag_processor", "triggerer")
        return all((data.get(p) or {}).get("status") == "healthy" for p in parts)

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.healthy():
                return
            dead = [c for c, pid in self.running().items() if pid is None]
            if dead:
                raise LoomError(f"airflow {', '.join(dead)} exited: see {self.home / 'logs'}/<component>.log")
            time.sleep(1)
        raise LoomError(f"Airflow did not become healthy within {timeout:.0f} s: see {self.home / 'logs'}")

    def password(self) -> str:
        try:
            return json.loads(self.passwords_file.read_text())["admin"]
        except (OSError, ValueError, KeyError):
            raise LoomError(
                f"no admin password yet ({self.passwords_file}): start the stack first (`make run`)"
            ) from None

    def token(self) -> str:
        body = {"username": "admin", "password": self.password()}
        return self.request("POST", "/auth/token", body, auth=False)["access_token"]

    def request(self, method: str, path: str, body: Any = None, auth: bool = True, token: str | None = None) -> Any:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {token or self.token()}"
        data = json.dumps(body).encode() if body is not None else None
        for attempt in range(3):
            req = urllib.request.Request(self.api + path, data=data, method=method, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=90) as resp:  # > SQLite's 60 s busy timeout
                    text = resp.read().decode()
                return json.loads(text) if text else None
            except urllib.error.HTTPError as exc:
                error = ApiError(exc.code, exc.read().decode(errors="replace"))
                if exc.code < 500 or attempt == 2:  # 4xx is an answer; 5xx may be a passing DB lock
                    raise error from None
            except urllib.error.URLError as exc:
                raise LoomError(f"cannot reach Airflow at {self.api}: {exc.reason}") from None
            time.sleep(1 + attempt)
        raise AssertionError("unreachable")


def isolated_env(root: Path, port: int, ssh_port: int, templates: Path | None = None,
                 pip_cache: Path | None = None) -> dict[str, str]:
    """Environment for a second, independent stack (tests, benchmarks): its own API port,
    AIRFLOW_HOME, cluster store, state folder and local-node SSH port under ``root``."""
    return {
        "LOOM_ROOT": str(REPO_ROOT),
        "AIRFLOW_CONFIG": str(REPO_ROOT / "airflow.cfg"),
        "AIRFLOW_HOME": str(root / "airflow"),
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__LOOM__API_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__LOOM__TEMPLATES_DIR": str(templates or REPO_ROOT / "templates"),
        "AIRFLOW__LOOM__STATE_DIR": str(root / "state"),
        "AIRFLOW__LOOM__STORE_SQL_CONN": f"sqlite:///{root / 'state' / 'loom.db'}",
        "AIRFLOW__LOOM__LOCAL_SSH_PORT": str(ssh_port),
        "AIRFLOW__LOOM__LOCAL_PIP_CACHE": str(pip_cache or REPO_ROOT / "state" / "cache" / "pip"),
    }


def process_tree_memory(pids: list[int]) -> tuple[int, int]:
    """(RSS sum, PSS sum) in bytes of the given processes and all their descendants. RSS counts
    pages shared by forked workers once per process; PSS divides them among the sharers."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    rss = pss = 0
    stack, seen = list(pids), set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1]) * 1024
        except (OSError, ValueError):
            pass
        stack.extend(children.get(pid, []))
    return rss, pss


class ApiError(LoomError):
    def __init__(self, status: int, body: str):
        self.status, self.body = status, body
        super().__init__(f"Airflow API answered {status}: {body[:1000]}")
