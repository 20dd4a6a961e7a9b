"""The ``shell`` automator: upload the action's script by SFTP and run it with quoted args.

The script's environment (cluster, node, service, action, the macro-expanded config as JSON) is
uploaded as a file and sourced, so the logged command line stays short and nothing needs
``AcceptEnv``. Output streams line by line into the task log (SSHHook logs each line).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loom.automators import ActionContext, Automator, loom_env, register
from loom.automators.remote import REMOTE_DIR, RemoteSession, env_exec, env_text, wrap_command
from loom.automators.ssh import NodeAccess
from loom.spec.actions import ShellAction


@dataclass(frozen=True)
class ShellInvocation:
    service: str
    action: str
    script: Path  # local file
    args: list[str]  # already macro-expanded, NOT yet quoted
    env: dict[str, str] = field(default_factory=dict)
    timeout: int = 1800


def remote_command(inv: ShellInvocation, sudo: bool) -> str:
    """``cd ~ && [sudo -n -H] timeout ... bash -c 'set -a; . <env>; set +a; exec bash <script> <args>'``."""
    script = f"{REMOTE_DIR}/services/{inv.service}/{inv.script.name}"
    words = ["bash", script, *inv.args]
    return wrap_command(env_exec(f"{REMOTE_DIR}/run/{inv.service}.{inv.action}.env", words), sudo, inv.timeout)


def run_shell_action(access: NodeAccess, inv: ShellInvocation) -> str:
    """Run one action on one node; return its stdout. Raise ActionError naming node and action."""
    with RemoteSession(access, inv.service, inv.action, inv.timeout) as node:
        folder = node.service_dir()
        node.put_file(inv.script, f"{folder}/{inv.script.name}")
        node.put_text(env_text(inv.env), f"{REMOTE_DIR}/run/{inv.service}.{inv.action}.env")
        _, out = node.run_command(remote_command(inv, sudo=node.sudo))
    return out


def action_env(cluster: str, hostname: str, ip: str, service: str, action: str, config: dict[str, Any]) -> dict[str, str]:
    return loom_env(cluster, hostname, ip, service, action, config)


@register
class ShellAutomator(Automator):
    """``{type: shell, script: scripts/x.sh, args: [...]}``: bash the script on the node."""

    name = "shell"
    Action = ShellAction

    def run(self, access: NodeAccess, ctx: ActionContext) -> str:
        spec = ctx.spec
        assert isinstance(spec, ShellAction)
        inv = ShellInvocation(ctx.service, ctx.action, ctx.path(spec.script), list(spec.args), ctx.env(), spec.timeout)
        return run_shell_action(access, inv)
