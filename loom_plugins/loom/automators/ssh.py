"""SSH transport to a node with a pinned host key, on Airflow's SSHHook (paramiko)."""

from __future__ import annotations

from base64 import b64decode
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loom.errors import ActionError


@dataclass(frozen=True)
class NodeAccess:
    hostname: str
    ip: str
    port: int
    user: str
    key_file: Path
    host_key: str  # "ssh-ed25519 AAAA... comment"

    @classmethod
    def from_view(cls, node: dict[str, Any], key_file: Path) -> NodeAccess:
        if not node.get("ip") or not node.get("host_key"):
            raise ActionError(f"node {node['hostname']!r} has no address or host key yet: was it provisioned?")
        return cls(node["hostname"], node["ip"], int(node["port"] or 22), node["sshuser"], key_file, node["host_key"])


def ssh_hook(access: NodeAccess, cmd_timeout: float = 1800, conn_timeout: float = 10) -> Any:
    """An SSHHook that accepts only the node's recorded host key (no ~/.ssh, no agent keys)."""
    import paramiko
    from airflow.providers.ssh.hooks.ssh import SSHHook

    hook = SSHHook(
        remote_host=access.ip,
        port=access.port,
        username=access.user,
        key_file=str(access.key_file),
        conn_timeout=conn_timeout,
        cmd_timeout=cmd_timeout,
        no_host_key_check=False,
        conn_retry_attempts=1,  # a wrong key never heals; transient failures are the task's retries
    )
    kind, data = access.host_key.split()[:2]
    key_types = {"ssh-ed25519": paramiko.Ed25519Key, "ssh-rsa": paramiko.RSAKey}
    hook.host_key = key_types[kind](data=b64decode(data))
    hook.look_for_keys = False
    hook.allow_host_key_change = False
    return hook


def ssh_exec(access: NodeAccess, command: str, timeout: float = 60) -> tuple[int, bytes, bytes]:
    """Connect (pinned host key), run one command, close: (exit status, stdout, stderr).
    Connection errors propagate unchanged for the caller to word."""
    hook = ssh_hook(access, cmd_timeout=timeout)
    client = hook.get_conn()
    try:
        return hook.exec_ssh_client_command(client, command, get_pty=False, environment=None, timeout=timeout)
    finally:
        client.close()
