"""One SSH session on a node for one action: upload files by SFTP, run one command, name failures.

Shared by the automators that run on the node (shell, puppet, chef-solo). Files go under
``~/.loom`` (mode 0700): ``services/<service>/`` for what the service ships, ``run/`` for the
per-action env files (0600). The command runs from the login's home, wrapped as::

    cd ~ && [sudo -n -H] timeout -k 10 <timeout> bash -c '<body>'

``sudo -n -H`` when the node's ssh user is not root (never prompts: a user without passwordless
sudo fails at once); ``timeout`` enforces the action's total run time on the node.
"""

from __future__ import annotations

import io
import shlex
import tarfile
from pathlib import Path, PurePosixPath
from typing import Any

from loom.automators.ssh import NodeAccess, ssh_hook
from loom.errors import ActionError

REMOTE_DIR = ".loom"
KILL_GRACE = 10  # seconds between timeout's TERM and KILL
TIMED_OUT = 124  # exit status of coreutils timeout


def wrap_command(body: str, sudo: bool, timeout: int | None = None) -> str:
    """The command line sent to the node for a bash ``body`` (see the module docstring)."""
    words = ["sudo", "-n", "-H"] if sudo else []
    if timeout is not None:
        words += ["timeout", "-k", str(KILL_GRACE), str(int(timeout))]
    words += ["bash", "-c"]
    return "cd ~ && " + " ".join(words) + " " + shlex.quote(body)


def env_exec(env_file: str, words: list[str], path_export: str = "") -> str:
    """``set -a; . <env file>; set +a; [PATH=...; ]exec <words>``: the bash body every automator
    runs on the node (its environment comes from the uploaded env file, see ``env_text``)."""
    return f"set -a; . {shlex.quote(env_file)}; set +a; {path_export}exec " + " ".join(shlex.quote(w) for w in words)


def env_text(env: dict[str, str]) -> str:
    """An env file for ``set -a; . file; set +a``: one ``KEY='value'`` per line, values quoted."""
    return "".join(f"{k}={shlex.quote(v)}\n" for k, v in sorted(env.items()))


def failure(service: str, action: str, access: NodeAccess, reason: str, lines: list[str]) -> ActionError:
    """The ActionError of a failed action: service.action, node, why, the last output lines."""
    tail = " | ".join(line for line in lines if line.strip()) or "(no output)"
    return ActionError(
        f"{service}.{action} failed on {access.hostname} ({reason}): {tail}"
        " - fix the cause, then clear this task in the Airflow UI to resume"
    )


def tail_lines(out: bytes, err: bytes, n: int = 5) -> list[str]:
    """The last ``n`` lines of stderr, or of stdout when stderr is empty."""
    for stream in (err, out):
        lines = stream.decode("utf-8", "replace").strip().splitlines()[-n:]
        if lines:
            return lines
    return []


class RemoteSession:
    """``with RemoteSession(access, service, action, timeout) as node: node.put...; node.run(...)``."""

    def __init__(self, access: NodeAccess, service: str, action: str, timeout: int):
        self.access, self.service, self.action, self.timeout = access, service, action, timeout
        self.sudo = access.user != "root"
        # The remote timeout ends the command; the SSH idle timeout is only a backstop.
        self.hook = ssh_hook(access, cmd_timeout=timeout + KILL_GRACE + 30)
        self.client: Any = None
        self.sftp: Any = None
        self.home = ""

    def __enter__(self) -> RemoteSession:
        try:
            self.client = self.hook.get_conn()
        except Exception as exc:  # paramiko/socket errors: say which node
            a = self.access
            raise ActionError(
                f"{self.service}.{self.action}: cannot reach {a.hostname} ({a.ip}:{a.port}) over SSH: {exc}"
            ) from exc
        self.sftp = self.client.open_sftp()
        self.home = self.sftp.normalize(".")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.sftp is not None:
            self.sftp.close()
        self.client.close()

    # --- files ---------------------------------------------------------------------------
    def abs(self, rel: str) -> str:
        """Absolute remote path of ``rel`` (relative to the login's home)."""
        return str(PurePosixPath(self.home) / rel)

    def mkdirs(self, rel: str) -> None:
        parts = PurePosixPath(rel).parts
        for i in range(1, len(parts) + 1):
            try:
                self.sftp.mkdir(str(PurePosixPath(*parts[:i])), 0o700)
            except OSError:
                pass  # exists

    def service_dir(self) -> str:
        rel = f"{REMOTE_DIR}/services/{self.service}"
        self.mkdirs(rel)
        self.mkdirs(f"{REMOTE_DIR}/run")
        return rel

    def env_file(self, env: dict[str, str]) -> str:
        """Upload ``env`` as ``.loom/run/<service>.<action>.env`` (0600); return its path."""
        rel = f"{REMOTE_DIR}/run/{self.service}.{self.action}.env"
        self.mkdirs(f"{REMOTE_DIR}/run")
        self.put_text(env_text(env), rel)
        return rel

    def path_export(self, *extra: str) -> str:
        """``export PATH=~/.loom/bin:<extra>:$PATH;`` with the home spelled out (sudo -H changes
        $HOME): a tool wrapper in ~/.loom/bin wins over the system's."""
        dirs = ":".join([shlex.quote(self.abs(f"{REMOTE_DIR}/bin")), *extra])
        return f'export PATH={dirs}:"$PATH"; '

    def put_file(self, local: Path, rel: str) -> None:
        self.sftp.put(str(local), rel)
        self.sftp.chmod(rel, local.stat().st_mode & 0o777)

    def put_text(self, text: str, rel: str, mode: int = 0o600) -> None:
        self.sftp.putfo(io.BytesIO(text.encode()), rel)
        self.sftp.chmod(rel, mode)

    def put_tree(self, local_dir: Path, rel: str) -> None:
        """Replace the remote folder ``rel`` with a copy of ``local_dir`` (one tar upload)."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            tar.add(str(local_dir), arcname=".", filter=_no_owner)
        buf.seek(0)
        self.mkdirs(str(PurePosixPath(rel).parent))
        archive = f"{rel}.tar.gz"
        self.sftp.putfo(buf, archive)
        q, a = shlex.quote(rel), shlex.quote(archive)
        self.exec(f"rm -rf {q} && mkdir -p {q} && tar -xzf {a} -C {q} --no-same-owner && rm -f {a}", "unpack")

    # --- commands ------------------------------------------------------------------------
    def exec(self, command: str, what: str) -> str:
        """Run a plain command as the login user (housekeeping); raise ActionError on failure."""
        status, out, err = self.hook.exec_ssh_client_command(self.client, command, get_pty=False, environment=None, timeout=60)
        if status != 0:
            raise failure(self.service, self.action, self.access, f"{what}: exit {status}", tail_lines(out, err))
        return out.decode("utf-8", "replace")

    def run(self, body: str, ok: tuple[int, ...] = (0,)) -> tuple[int, str]:
        """Run the action's bash ``body`` (sudo, timeout); its output streams into the log.
        Return (exit status, stdout); any status not in ``ok`` raises ActionError."""
        return self.run_command(wrap_command(body, self.sudo, self.timeout), ok)

    def run_command(self, command: str, ok: tuple[int, ...] = (0,)) -> tuple[int, str]:
        status, out, err = self.hook.exec_ssh_client_command(self.client, command, get_pty=False, environment=None)
        if status == TIMED_OUT:
            raise failure(self.service, self.action, self.access, f"timed out after {self.timeout} s", tail_lines(out, err))
        if status not in ok:
            raise failure(self.service, self.action, self.access, f"exit {status}", tail_lines(out, err))
        return status, out.decode("utf-8", "replace")


def _no_owner(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info
