"""The ``shell`` automator: upload the action's script by SFTP and run it with quoted args.

The script's environment (cluster, node, service, action, the macro-expanded config as JSON) is
uploaded as a file and sourced, so the logged command line stays short and nothing needs
``AcceptEnv``. Output streams line by line into the task log (SSHHook logs each line).
"""

from __future__ import annotations

import io
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loom.automators.ssh import NodeAccess, ssh_hook
from loom.errors import ActionError

REMOTE_DIR = ".loom"


@dataclass(frozen=True)
class ShellInvocation:
    service: str
    action: str
    script: Path  # local file
    args: list[str]  # already macro-expanded, NOT yet quoted
    env: dict[str, str] = field(default_factory=dict)
    timeout: int = 1800


def remote_command(inv: ShellInvocation, sudo: bool) -> str:
    run_dir = f"{REMOTE_DIR}/run"
    script = f"{REMOTE_DIR}/services/{inv.service}/{inv.script.name}"
    words = ["bash", script, *inv.args]
    body = f"set -a; . {run_dir}/{inv.service}.{inv.action}.env; set +a; exec " + " ".join(
        shlex.quote(w) for w in words
    )
    cmd = f"cd ~ && bash -c {shlex.quote(body)}"
    return f"sudo -n -H {cmd}" if sudo else cmd


def run_shell_action(access: NodeAccess, inv: ShellInvocation) -> str:
    """Run one action on one node; return its stdout. Raise ActionError naming node and action."""
    hook = ssh_hook(access, cmd_timeout=inv.timeout)
    env_text = "".join(f"{k}={shlex.quote(v)}\n" for k, v in sorted(inv.env.items()))
    try:
        client = hook.get_conn()
    except Exception as exc:  # paramiko/socket errors: say which node
        raise ActionError(f"{inv.service}.{inv.action}: cannot reach {access.hostname} ({access.ip}:{access.port}) over SSH: {exc}") from exc
    try:
        sftp = client.open_sftp()
        try:
            for d in (REMOTE_DIR, f"{REMOTE_DIR}/run", f"{REMOTE_DIR}/services", f"{REMOTE_DIR}/services/{inv.service}"):
                try:
                    sftp.mkdir(d, 0o700)
                except OSError:
                    pass
            sftp.put(str(inv.script), f"{REMOTE_DIR}/services/{inv.service}/{inv.script.name}")
            sftp.putfo(io.BytesIO(env_text.encode()), f"{REMOTE_DIR}/run/{inv.service}.{inv.action}.env")
            sftp.chmod(f"{REMOTE_DIR}/run/{inv.service}.{inv.action}.env", 0o600)
        finally:
            sftp.close()
        status, out, err = hook.exec_ssh_client_command(
            client, remote_command(inv, sudo=access.user != "root"), get_pty=False, environment=None, timeout=inv.timeout
        )
    finally:
        client.close()
    if status != 0:
        tail = err.decode("utf-8", "replace").strip().splitlines()[-5:] or out.decode("utf-8", "replace").strip().splitlines()[-5:]
        raise ActionError(
            f"{inv.service}.{inv.action} failed on {access.hostname} (exit {status}): "
            + " | ".join(tail)
            + " - fix the cause, then clear this task in the Airflow UI to resume"
        )
    return out.decode("utf-8", "replace")


def action_env(cluster: str, hostname: str, ip: str, service: str, action: str, config: dict[str, Any]) -> dict[str, str]:
    return {
        "LOOM_CLUSTER": cluster,
        "LOOM_HOST": hostname,
        "LOOM_IP": ip,
        "LOOM_SERVICE": service,
        "LOOM_ACTION": action,
        "LOOM_CONFIG": json.dumps(config, sort_keys=True),
    }
