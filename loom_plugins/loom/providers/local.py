"""The ``local`` provider: real nodes on this machine, as a libcloud NodeDriver.

Each node is an OpenSSH sshd listening on its own loopback address (127.0.0.N, one port for
all), started inside new UTS, PID and mount namespaces (``unshare``) so the node has its own
hostname and every process started on it dies with it. Its files live in
``<state>/nodes/<name>/``: ``node.json`` (address, pid, host key), the sshd config and host key,
the authorized cluster key, and ``home/`` (the login's $HOME, where services install).
The sshd is detached (own session, no inherited pipes) so nodes outlive the task that made
them and Airflow restarts. ``destroy_node`` kills the namespace and removes the folder.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from libcloud.common.base import ConnectionKey
from libcloud.compute.base import Node, NodeAuthSSHKey, NodeDriver, NodeImage, NodeSize
from libcloud.compute.types import NodeState

from loom.errors import ProviderError
from loom.keys import write_keypair
from loom.names import ENTITY_NAME_RE
from loom.procs import listening_ipv4, port_open, proc_start_time

SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
FIRST_HOST, LAST_HOST = 2, 254


def _port_free(ip: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((ip, port))
        except OSError:
            return False
    return True


class LocalNodeDriver(NodeDriver):
    """libcloud driver whose machines are namespaced sshd processes on loopback addresses."""

    type = "loom_local"
    name = "Loom local nodes"
    website = "https://github.com/loom"
    connectionCls = ConnectionKey
    features = {"create_node": ["ssh_key"]}

    def __init__(
        self,
        key: str | None = None,
        *,
        state_dir: str | Path,
        ssh_port: int = 2222,
        pip_cache: str | Path | None = None,
        boot_delay: float = 0,
        boot_wait: bool = True,
        **_: Any,
    ):
        super().__init__(key or "local")
        self.root = Path(state_dir) / "nodes"
        self.root.mkdir(parents=True, exist_ok=True)
        self.ssh_port = int(ssh_port)
        # Shared by the nodes' pip (like a package mirror would be), so installs stay fast.
        self.pip_cache = Path(pip_cache) if pip_cache else Path(state_dir) / "cache" / "pip"
        # Seconds a node takes to "boot" before its sshd starts, like a cloud VM (demos, tests).
        self.boot_delay = float(boot_delay)
        # False: create_node returns the node PENDING at once and it boots in the background,
        # like a cloud machine (Loom's confirm step then waits for it, deferred).
        self.boot_wait = bool(boot_wait)

    # --- libcloud API ------------------------------------------------------------------
    def list_sizes(self, location: Any = None) -> list[NodeSize]:
        return [NodeSize("local-small", "Local (shares the host)", 0, 0, 0, 0, self)]

    def list_images(self, location: Any = None, ex_owner: Any = None) -> list[NodeImage]:
        return [NodeImage("host", "The host's own OS", self)]

    def list_nodes(self) -> list[Node]:
        nodes = []
        for record in sorted(self.root.glob("*/node.json")):
            try:
                info = json.loads(record.read_text())
            except (OSError, ValueError):
                continue
            nodes.append(self._to_node(info))
        return nodes

    def create_node(
        self,
        name: str,
        size: NodeSize | None = None,
        image: NodeImage | None = None,
        location: Any = None,
        auth: NodeAuthSSHKey | None = None,
        ex_metadata: dict[str, str] | None = None,
        **_: Any,
    ) -> Node:
        """Create (or, when a node of that name is already running, return) a node. Idempotent."""
        if not ENTITY_NAME_RE.match(name):
            raise ProviderError(f"local node name {name!r} is not a valid hostname")
        if not isinstance(auth, NodeAuthSSHKey):
            raise ProviderError("local nodes need auth=NodeAuthSSHKey(<public key>) to authorize logins")
        with self._lock():
            existing = self._read(name)
            if existing is not None:
                node = self._to_node(existing)
                if node.state == NodeState.RUNNING or (node.state == NodeState.PENDING and self._alive(existing)
                                                       and not self.boot_wait):
                    return node  # made by an earlier try (maybe still booting)
                self._teardown(existing)  # half-made or dead: rebuild it cleanly
            info = self._build(name, auth.pubkey, ex_metadata or {})
        return self._wait_listening(info) if self.boot_wait else self._to_node(info)

    def destroy_node(self, node: Node) -> bool:
        with self._lock():
            info = self._read(node.name)
            if info is None:
                return True
            self._teardown(info)
        return True

    def reboot_node(self, node: Node) -> bool:
        raise ProviderError("local nodes do not support reboot; delete and re-create the node")

    # --- internals -----------------------------------------------------------------------
    @contextmanager
    def _lock(self) -> Iterator[None]:
        with open(self.root / ".lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _dir(self, name: str) -> Path:
        return self.root / name

    def _read(self, name: str) -> dict[str, Any] | None:
        try:
            return json.loads((self._dir(name) / "node.json").read_text())
        except (OSError, ValueError):
            return None

    def _alive(self, info: dict[str, Any]) -> bool:
        pid, started = info.get("pid"), info.get("pid_start")
        return bool(pid) and proc_start_time(pid) == started

    def _state(self, info: dict[str, Any]) -> NodeState:
        if not self._alive(info):
            return NodeState.TERMINATED if info.get("pid") else NodeState.PENDING
        return NodeState.RUNNING if port_open(info["ip"], info["port"]) else NodeState.PENDING

    def _to_node(self, info: dict[str, Any]) -> Node:
        return Node(
            id=info["name"],
            name=info["name"],
            state=self._state(info),
            public_ips=[info["ip"]],
            private_ips=[info["ip"]],
            driver=self,
            extra={
                "ssh_port": info["port"],
                "host_key": info["host_key"],
                "home": info["home"],
                "pid": info.get("pid"),
                "metadata": info.get("metadata", {}),
            },
        )

    def _free_ip(self) -> str:
        used = set()
        for record in self.root.glob("*/node.json"):
            try:
                used.add(json.loads(record.read_text())["ip"])
            except (OSError, ValueError, KeyError):
                continue
        used |= listening_ipv4()  # other Loom installations' nodes, or anything else on the host
        for host in range(FIRST_HOST, LAST_HOST + 1):
            ip = f"127.0.0.{host}"
            if ip not in used and _port_free(ip, self.ssh_port):
                return ip
        raise ProviderError(f"no free loopback address left for local nodes (127.0.0.{FIRST_HOST}-{LAST_HOST})")

    def _build(self, name: str, pubkey: str, metadata: dict[str, str]) -> dict[str, Any]:
        if not Path(SSHD).exists():
            raise ProviderError(
                f"{SSHD} not found: install OpenSSH's server (apt-get install -y openssh-server)"
            )
        folder = self._dir(name)
        if folder.exists():
            shutil.rmtree(folder)
        home = folder / "home"
        home.mkdir(parents=True, mode=0o755)
        folder.chmod(0o755)
        self.pip_cache.mkdir(parents=True, exist_ok=True)
        Path("/run/sshd").mkdir(exist_ok=True, mode=0o755)
        host_pub = write_keypair(folder / "ssh_host_ed25519_key", f"host@{name}")
        (folder / "authorized_keys").write_text(pubkey.strip() + "\n")
        ip = self._free_ip()
        shell = folder / "login-shell"
        shell.write_text(
            "#!/bin/sh\n"
            "# ForceCommand of this node's sshd: the login's HOME is the node's own home.\n"
            f"export HOME='{home}'\n"
            f"export PIP_CACHE_DIR='{self.pip_cache}'\n"
            f"export LOOM_NODE='{name}'\n"
            'cd "$HOME" || exit 1\n'
            'case "$SSH_ORIGINAL_COMMAND" in\n'
            '  "") exec /bin/bash -l ;;\n'
            f'  internal-sftp|*/sftp-server) exec {SFTP_SERVER} ;;\n'
            '  *) exec /bin/bash -c "$SSH_ORIGINAL_COMMAND" ;;\n'
            "esac\n"
        )
        shell.chmod(0o755)
        config = folder / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"ListenAddress {ip}:{self.ssh_port}",
                    f"HostKey {folder / 'ssh_host_ed25519_key'}",
                    f"AuthorizedKeysFile {folder / 'authorized_keys'}",
                    "PidFile none",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PubkeyAuthentication yes",
                    "PermitRootLogin prohibit-password",
                    "StrictModes no",
                    "UsePAM no",
                    "PrintMotd no",
                    "MaxStartups 64:30:128",
                    "MaxSessions 64",
                    "AcceptEnv LOOM_*",
                    f"Subsystem sftp {SFTP_SERVER}",
                    f"ForceCommand {shell}",
                    "",
                ]
            )
        )
        log = open(folder / "sshd.log", "ab")
        namespaces = ["--uts", "--pid", "--mount", "--mount-proc", "--fork", "--kill-child"]
        if os.geteuid() != 0:
            namespaces = ["--user", "--map-root-user", *namespaces]
        cmd = [
            "unshare",
            *namespaces,
            "--",
            "/bin/sh",
            "-c",
            'sleep "$4" && hostname "$1" && exec "$2" -D -e -f "$3"',
            "loom-node",
            name,
            SSHD,
            str(config),
            str(self.boot_delay),
        ]
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, close_fds=True
        )
        log.close()
        info = {
            "name": name,
            "ip": ip,
            "port": self.ssh_port,
            "pid": proc.pid,
            "pid_start": proc_start_time(proc.pid),
            "host_key": host_pub,
            "home": str(home),
            "metadata": metadata,
            "created_at": time.time(),
        }
        tmp = folder / "node.json.tmp"
        tmp.write_text(json.dumps(info, indent=2))
        tmp.replace(folder / "node.json")
        return info

    def _wait_listening(self, info: dict[str, Any], timeout: float = 20.0) -> Node:
        deadline = time.monotonic() + timeout + self.boot_delay
        while time.monotonic() < deadline:
            if not self._alive(info):
                break
            if port_open(info["ip"], info["port"], timeout=0.2):
                return self._to_node(info)
            time.sleep(0.05)
        log_tail = (self._dir(info["name"]) / "sshd.log").read_text(errors="replace")[-800:]
        with self._lock():
            self._teardown(info)
        raise ProviderError(f"local node {info['name']!r}: sshd did not start on {info['ip']}:{info['port']}: {log_tail}")

    def _teardown(self, info: dict[str, Any]) -> None:
        pid = info.get("pid")
        if pid and self._alive(info):
            try:
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                children = []
            watch = [(pid, info["pid_start"])] + [(int(c), proc_start_time(int(c))) for c in children]
            os.kill(pid, signal.SIGKILL)  # --kill-child: the namespace's init dies with it
            for child, _ in watch[1:]:
                try:
                    os.kill(child, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and any(
                started and proc_start_time(p) == started for p, started in watch
            ):
                time.sleep(0.05)
        shutil.rmtree(self._dir(info["name"]), ignore_errors=True)
