"""The ``ansible`` automator: ``ansible-playbook`` on the Airflow worker, limited to the node.

For each action a private temp dir (0700, removed afterwards) holds:

- ``inventory.json``: every node of the cluster (``ansible_host`` = ip, port, ssh user, the
  cluster key) and one group per service, so plays can say ``hosts: dask-worker``;
- ``known_hosts``: the nodes' pinned host keys; ssh runs with ``StrictHostKeyChecking=yes``
  against that file only (and ``-F /dev/null``: no ~/.ssh/config, no agent keys);
- ``vars.json`` (0600): ``loom_cluster, loom_host, loom_ip, loom_service, loom_action,
  loom_config, loom_nodes`` plus the action's ``extra_vars`` (macro-expanded for the node),
  passed as ``-e @vars.json``;
- ``ansible.cfg``: empty and named by ``ANSIBLE_CONFIG``, so no ansible.cfg of the worker
  (cwd, ~/.ansible.cfg, /etc/ansible) changes the run.

The run uses ``--limit <node>``, ``--become`` when the node's ssh user is not root, and the
action's ``timeout`` for the whole playbook (then the process group is killed). Output goes to
the task log line by line; a failure raises ActionError with the failing task's error.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections import deque
from pathlib import Path
from typing import Any

from loom.automators import ActionContext, Automator, NodeView, register
from loom.automators.remote import REMOTE_DIR, failure
from loom.automators.ssh import NodeAccess
from loom.errors import ActionError
from loom.spec.actions import AnsibleAction

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 15
_HOST_PROBLEM = re.compile(r"^(fatal|failed): \[")
_PROBLEM = re.compile(r"^ERROR!|^\[ERROR\]")


def ansible_playbook() -> str:
    """``ansible-playbook`` of the worker's Python environment (ansible-core is a dependency)."""
    beside = Path(sys.executable).parent / "ansible-playbook"
    found = str(beside) if beside.is_file() else shutil.which("ansible-playbook")
    if not found:
        raise ActionError("ansible-playbook not found beside the worker's Python nor on PATH: install ansible-core")
    return found


def known_hosts_line(node: NodeView) -> str:
    kind, data = node.host_key.split()[:2]
    host = node.ip if node.port == 22 else f"[{node.ip}]:{node.port}"
    return f"{host} {kind} {data}\n"


def inventory(ctx: ActionContext) -> dict[str, Any]:
    """The cluster as an ansible YAML/JSON inventory: hosts by hostname, groups by service."""
    hosts = {
        n.hostname: {
            "ansible_host": n.ip,
            "ansible_port": n.port,
            "ansible_user": n.sshuser,
            "ansible_ssh_private_key_file": str(ctx.key_file),
        }
        for n in ctx.nodes
    }
    groups: dict[str, dict[str, Any]] = {}
    for n in ctx.nodes:
        for svc in n.services:
            groups.setdefault(svc, {"hosts": {}})["hosts"][n.hostname] = None
    return {"all": {"hosts": hosts, "children": dict(sorted(groups.items()))}}


def extra_vars(ctx: ActionContext) -> dict[str, Any]:
    spec = ctx.spec
    assert isinstance(spec, AnsibleAction)
    loom = {f"loom_{k}": v for k, v in ctx.loom_vars().items()}
    return {**loom, **spec.extra_vars}


def role_playbook(role: str) -> list[dict[str, Any]]:
    return [{"name": f"role {role}", "hosts": "all", "roles": [{"role": role}]}]


def command(ctx: ActionContext, workdir: Path, sudo: bool) -> list[str]:
    spec = ctx.spec
    assert isinstance(spec, AnsibleAction)
    playbook = ctx.path(spec.playbook) if spec.playbook else workdir / "role.json"
    cmd = [ansible_playbook(), "-i", str(workdir / "inventory.json"), "--limit", ctx.hostname,
           "-e", f"@{workdir / 'vars.json'}"]
    if sudo:
        cmd.append("--become")
    if spec.tags:
        cmd += ["--tags", ",".join(spec.tags)]
    return [*cmd, str(playbook)]


def ansible_env(ctx: ActionContext, workdir: Path) -> dict[str, str]:
    """The process environment: the worker's, minus any ANSIBLE_*/agent, plus a pinned config."""
    spec = ctx.spec
    assert isinstance(spec, AnsibleAction)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_") and k != "SSH_AUTH_SOCK"}
    ssh_args = [
        "-F /dev/null",
        f"-o UserKnownHostsFile={workdir / 'known_hosts'}",
        "-o GlobalKnownHostsFile=/dev/null",
        "-o StrictHostKeyChecking=yes",
        "-o IdentitiesOnly=yes",
        "-o BatchMode=yes",
        "-o ControlMaster=auto",
        "-o ControlPersist=60s",
    ]
    env.update(
        LANG="C.UTF-8",
        LC_ALL="C.UTF-8",
        ANSIBLE_CONFIG=str(workdir / "ansible.cfg"),
        ANSIBLE_LOCAL_TEMP=str(workdir / "tmp"),
        ANSIBLE_REMOTE_TEMP=f"~/{REMOTE_DIR}/ansible-tmp",
        ANSIBLE_SSH_CONTROL_PATH_DIR=str(workdir / "cp"),
        ANSIBLE_SSH_ARGS=" ".join(ssh_args),
        ANSIBLE_HOST_KEY_CHECKING="True",
        ANSIBLE_TIMEOUT=str(CONNECT_TIMEOUT),
        ANSIBLE_PIPELINING="True",
        ANSIBLE_PYTHON_INTERPRETER="python3",
        ANSIBLE_ROLES_PATH=str(ctx.path(spec.roles_path)),
        ANSIBLE_RETRY_FILES_ENABLED="False",
        ANSIBLE_TRANSFORM_INVALID_GROUP_CHARS="ignore",  # groups are service names: dask-worker
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_STDOUT_CALLBACK="default",
        PYTHONUNBUFFERED="1",
    )
    return env


def write_workdir(ctx: ActionContext, workdir: Path) -> None:
    spec = ctx.spec
    assert isinstance(spec, AnsibleAction)
    (workdir / "tmp").mkdir(mode=0o700)
    (workdir / "cp").mkdir(mode=0o700)
    (workdir / "ansible.cfg").write_text("# empty on purpose: Loom sets everything by ANSIBLE_* variables\n")
    (workdir / "inventory.json").write_text(json.dumps(inventory(ctx), indent=2))
    (workdir / "known_hosts").write_text("".join(known_hosts_line(n) for n in ctx.nodes if n.host_key))
    fd = os.open(workdir / "vars.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(extra_vars(ctx), fh)
    if spec.role:
        (workdir / "role.json").write_text(json.dumps(role_playbook(spec.role)))


def _shorten(text: str, limit: int = 600) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit // 3] + " ... " + text[-(limit * 2 // 3):]


def _host_error(line: str) -> str:
    """``fatal: [h]: FAILED! => {"msg": ...}`` -> ``fatal: [h]: FAILED! <msg>`` (shortened)."""
    head, sep, payload = line.partition(" => ")
    if sep:
        try:
            data = json.loads(payload)
        except ValueError:
            data = None
        if isinstance(data, dict) and data.get("msg"):
            return _shorten(f"{head} {data['msg']}")
    return _shorten(line)


def error_summary(lines: list[str], last: int = 5) -> list[str]:
    """What failed: each failing host's error with its task; else ansible's own ERROR lines
    (syntax, missing files); else the last lines of output."""
    hosts: list[str] = []
    errors: list[str] = []
    task = ""
    for line in lines:
        if line.startswith(("TASK [", "PLAY [")):
            task = line.rstrip(" *")
        elif _HOST_PROBLEM.search(line):
            if task and task not in hosts:
                hosts.append(task)
            hosts.append(_host_error(line))
        elif _PROBLEM.search(line):
            errors.append(_shorten(line))
    return hosts[-6:] or errors[-3:] or [_shorten(line) for line in lines[-last:]]


def run_streaming(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float) -> tuple[int | None, list[str]]:
    """Run ``cmd``, logging each output line; kill its process group after ``timeout`` seconds.
    Return (exit status or None when timed out, all output lines)."""
    proc = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        text=True, errors="replace", bufsize=1, start_new_session=True,
    )
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(5)
                return
            except subprocess.TimeoutExpired:
                continue

    timer = threading.Timer(timeout, kill)
    timer.daemon = True
    timer.start()
    lines: deque[str] = deque(maxlen=5000)
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            lines.append(line)
            if line.strip():
                log.info("%s", line)
        status = proc.wait()
    finally:  # also when the task is killed: never leave ansible running
        timer.cancel()
        if proc.poll() is None:
            kill()
        proc.stdout.close()
    return (None if timed_out.is_set() else status), list(lines)


def _close_masters(workdir: Path) -> None:
    """End the ssh ControlPersist masters of this run (they would linger 60 s otherwise)."""
    for sock in (workdir / "cp").glob("*"):
        subprocess.run(
            ["ssh", "-F", "/dev/null", "-o", f"ControlPath={sock}", "-O", "exit", "loom-node"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10, check=False,
        )


@register
class AnsibleAutomator(Automator):
    """``{type: ansible, playbook: ansible/site.yml, extra_vars: {...}, tags: [...]}`` or
    ``{type: ansible, role: myrole, roles_path: roles}``."""

    name = "ansible"
    Action = AnsibleAction

    def run(self, access: NodeAccess, ctx: ActionContext) -> str:
        spec = ctx.spec
        assert isinstance(spec, AnsibleAction)
        workdir = Path(tempfile.mkdtemp(prefix="loom-ansible-"))
        try:
            write_workdir(ctx, workdir)
            cmd = command(ctx, workdir, sudo=access.user != "root")
            log.info("running: %s", " ".join(cmd))
            status, lines = run_streaming(cmd, ansible_env(ctx, workdir), workdir, spec.timeout)
        finally:
            _close_masters(workdir)
            shutil.rmtree(workdir, ignore_errors=True)
        if status is None:
            raise failure(ctx.service, ctx.action, access, f"ansible-playbook timed out after {spec.timeout} s", lines[-5:])
        if status != 0:
            raise failure(ctx.service, ctx.action, access, f"ansible-playbook exit {status}", error_summary(lines))
        return "\n".join(lines)
