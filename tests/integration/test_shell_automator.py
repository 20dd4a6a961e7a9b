"""The shell automator on a real node: scripts uploaded, args quoted, failures named."""

from __future__ import annotations

from pathlib import Path

import pytest

from loom.automators.shell import ShellInvocation, action_env, run_shell_action
from loom.automators.ssh import NodeAccess
from loom.errors import ActionError

pytestmark = pytest.mark.integration

HOSTILE = ["a b", "$(touch /tmp/loom-pwned)", "`id`", "x'y\"z", "; rm -rf ~", "*", "", "line\nbreak"]


@pytest.fixture
def node_access(driver, auth, cluster_key) -> NodeAccess:
    node = driver.create_node("itest-sh", auth=auth)
    return NodeAccess(node.name, node.public_ips[0], node.extra["ssh_port"], "root", cluster_key[0], node.extra["host_key"])


def _script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "svc" / "action.sh"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/usr/bin/env bash\nset -euo pipefail\n" + body)
    return path


def test_args_and_env_arrive_verbatim(node_access, tmp_path):
    script = _script(tmp_path, 'for a in "$@"; do printf "<%s>\\n" "$a"; done; echo "cfg=$LOOM_CONFIG"; echo "host=$LOOM_HOST"\n')
    env = action_env("test", "itest-sh", node_access.ip, "svc", "install", {"k": "v; $(id)"})
    out = run_shell_action(node_access, ShellInvocation("svc", "install", script, HOSTILE, env))
    assert out.split("\ncfg=")[0].split(">\n<") == ["<" + HOSTILE[0]] + HOSTILE[1:-1] + [HOSTILE[-1] + ">"]
    assert 'cfg={"k": "v; $(id)"}' in out
    assert "host=itest-sh" in out
    assert not Path("/tmp/loom-pwned").exists()


def test_output_streams_into_the_log(node_access, tmp_path, capfd):
    """SSHHook logs each output line (Airflow's task logger writes to the task log / stdout)."""
    script = _script(tmp_path, "echo first-line; echo second-line >&2\n")
    run_shell_action(node_access, ShellInvocation("svc", "start", script, [], {}))
    logged = capfd.readouterr().out
    assert "first-line" in logged and "second-line" in logged


def test_failure_names_node_action_and_exit_code(node_access, tmp_path):
    script = _script(tmp_path, "echo 'disk full' >&2; exit 3\n")
    with pytest.raises(ActionError) as err:
        run_shell_action(node_access, ShellInvocation("svc", "configure", script, [], {}))
    message = str(err.value)
    assert "svc.configure" in message and "itest-sh" in message and "exit 3" in message and "disk full" in message


def test_unreachable_node_is_named(node_access, tmp_path):
    dead = NodeAccess("ghost", "127.0.0.254", 2399, "root", node_access.key_file, node_access.host_key)
    script = _script(tmp_path, "true\n")
    with pytest.raises(ActionError, match="cannot reach ghost"):
        run_shell_action(dead, ShellInvocation("svc", "start", script, [], {}))
